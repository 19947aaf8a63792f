"""What every weight-space transform shares: one graph, a uniform batch, or a
mixed batch, and the split of a random transform into *draw* and *apply*.

A transform here is a :class:`torch_geometric.transforms.BaseTransform` whose
randomness is drawn once by :meth:`WeightSpaceTransform.sample` and then used
by the deterministic :meth:`WeightSpaceTransform.apply`. ``forward`` is
``apply(data, sample(data))``. The split is what lets a whole
:class:`~torch_geometric.data.Batch` of one architecture be transformed in one
tensor operation per layer (the draws carry a leading batch dimension ``B``)
while staying equal in distribution to the per-graph path, and what lets a
test feed the *same* draws to both paths and compare them exactly
(:func:`select_graph` picks graph ``i``'s draws out of a batch's).

Batches whose graphs differ in architecture or activation take a per-graph
fallback: every graph gets its own draws and its own transform, and the
results are written back into the batch in place of the old parameters. It is
correct but loops over graphs in Python; collate graphs of one architecture to
get the vectorised path.
"""
from __future__ import annotations

import copy
import math
import weakref
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import BaseTransform

from nngraph import activations as A
from nngraph.graph import (activations, architecture, check_finite, graph_layer_views, layer_views,
                           stacked_layer_views, with_layers, with_stacked_layers)

Graph = Union[Data, Batch]
Params = Any            # a tensor, None, or a list / tuple of them (nested)
Layers = Tuple[List[Tensor], List[Tensor]]

__all__ = ['WeightSpaceTransform', 'select_graph', 'add_to_bias', 'affine_first_layer',
           'uniform_range', 'uniform', 'per_hidden_layer', 'require_finite', 'require_finite_eager',
           'require_finite_labels', 'mark_screened',
           'require_finite_number']


def require_finite(g: Graph, caller: str, *, labels: bool = False) -> None:
    """:func:`nngraph.graph.check_finite` with ``caller`` in front of its
    message: a ``ValueError`` if ``g.edge_attr`` or ``g.x`` (and with
    ``labels`` a soft label ``g.y``) holds a NaN or an infinity, naming the
    graph's index in a batch, the field and the layer. One sum per tensor and
    one number read back (one device sync); the details are worked out only
    when it fails."""
    fields = g._store._mapping      # Data.__getattr__ costs a microsecond per field, per sample
    ea, x = fields.get('edge_attr'), fields.get('x')
    if ea is None or x is None:
        return          # not a parameter graph: the caller's own checks say so
    if _screened(ea, x):
        if labels:
            require_finite_labels(fields.get('y'), caller)
        return
    # check_finite's own screen, inlined: this runs per sample and per
    # transform, and a sum is non-finite whenever one of its terms is
    total = ea.sum() + x.sum()
    y = fields.get('y') if labels else None
    soft = isinstance(y, Tensor) and y.is_floating_point()
    if soft:
        total = total + y.sum()
    if math.isfinite(total.item()):
        return
    try:
        check_finite(g)         # the exact test (an overflowing finite sum passes) and the message
    except ValueError as err:
        raise ValueError(f'{caller}: {err}') from None
    if soft:
        require_finite_labels(y, caller)


# The parameter tensors the last transform returned from a screened input:
# (weakref, version) of edge_attr, then of x. Every transform keeps finite
# graphs finite (property-tested), so when the next transform of a Compose
# chain receives those very tensors, unmodified since (an in-place change
# bumps the version), it need not screen them again: one screen per sample,
# not one per transform. A dead weakref never matches a new tensor.
_last_output: Tuple[Any, ...] = ()


def _screened(ea: Tensor, x: Tensor) -> bool:
    last = _last_output
    return (bool(last) and last[0]() is ea and last[1] == ea._version
            and last[2]() is x and last[3] == x._version)


def mark_screened(g: Graph) -> Graph:
    """Records ``g``'s parameters as screened (the output of a transform
    whose input passed :func:`require_finite`), so the next transform that
    receives them unchanged skips the screen; returns ``g``."""
    global _last_output
    fields = g._store._mapping
    ea, x = fields.get('edge_attr'), fields.get('x')
    if isinstance(ea, Tensor) and isinstance(x, Tensor):
        _last_output = (weakref.ref(ea), ea._version, weakref.ref(x), x._version)
    return g


#: :func:`require_finite` for the models' forwards, which may run under
#: torch.compile: there the check runs eagerly, a graph break by design (it
#: reads one number back to decide whether to raise). Transforms call the
#: plain function: the wrapper costs a microsecond per sample.
require_finite_eager = torch.compiler.disable(require_finite)


def require_finite_labels(y: Optional[Tensor], caller: str) -> None:
    """Raises ``ValueError`` if a soft label (float ``y``, one row per graph)
    holds a NaN or an infinity, naming the graph; hard labels pass."""
    if y is None or not y.is_floating_point() or math.isfinite(y.sum().item()):
        return
    rows = y.reshape(-1, y.size(-1)) if y.dim() else y.reshape(1, 1)
    bad = ~torch.isfinite(rows).all(1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        subject = f'the soft label of graph {i}' if rows.size(0) > 1 else 'the soft label'
        raise ValueError(f'{caller}: {subject} is not finite ({rows[i].tolist()}); labels must be finite')


def require_finite_number(value, name: str, transform: str) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``transform`` and
    ``name`` if it is not a finite number (a NaN or infinite setting turns
    every finite network it touches into NaN)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{transform}: {name} must be a finite number, got {value!r}') from None
    if not math.isfinite(v):
        raise ValueError(f'{transform}: {name} must be a finite number, got {value!r}')
    return v


def select_graph(params: Params, i: int) -> Params:
    """Graph ``i``'s share of draws made for a batch by
    :meth:`WeightSpaceTransform.sample`: every tensor indexed at ``[i]``
    along its leading (batch) dimension, the nesting kept."""
    if params is None:
        return None
    if isinstance(params, Tensor):
        return params[i]
    return type(params)(select_graph(p, i) for p in params)


def per_hidden_layer(draws: Tensor, sizes: Sequence[int]) -> List[Tensor]:
    """Splits one draw ``[..., d_1 + ... + d_{L-1}]`` into one ``[..., d_l]``
    per hidden layer: a single RNG call per transform, not one per layer."""
    return list(draws.split(list(sizes[1:-1]), dim=-1))


def add_to_bias(b: Tensor, delta: Tensor) -> Tensor:
    """``b`` (``[..., d, C_node]``) with ``delta`` (``[..., d]``) added to
    channel 0, the bias; further node channels are kept as they are."""
    shifted = b[..., :1] + delta.unsqueeze(-1).to(b.dtype)
    return shifted if b.size(-1) == 1 else torch.cat([shifted, b[..., 1:]], dim=-1)


def affine_first_layer(weights: Sequence[Tensor], biases: Sequence[Tensor],
                       matrix: Optional[Tensor] = None,
                       shift: Optional[Tensor] = None) -> Layers:
    r"""Composes the network with the input map :math:`T x = M x + t`:
    :math:`W_0 (M x + t) + b_0 = (W_0 M) x + (W_0 t + b_0)`, so the new network
    at :math:`x` equals the old one at :math:`T x`.

    Args:
        weights, biases: single (:func:`~nngraph.graph.layer_views`) or stacked
            (:func:`~nngraph.graph.stacked_layer_views`) views.
        matrix: :math:`M`, ``[..., d_0, d_0]`` (``None``: identity).
        shift: :math:`t`, ``[..., d_0]`` (``None``: zero).
    """
    weights, biases = list(weights), list(biases)
    w0 = weights[0]                                           # [..., d_1, d_0, C]
    if shift is not None:
        # channel 0 of the edges is the weight; the bias is channel 0 of the nodes
        moved = torch.einsum('...oi,...i->...o', w0[..., 0], shift.to(w0.dtype))
        biases[0] = add_to_bias(biases[0], moved)
    if matrix is not None:
        weights[0] = torch.einsum('...oic,...ij->...ojc', w0, matrix.to(w0.dtype))
    return weights, biases


def uniform_range(value: Union[float, Sequence[float]], name: str,
                  transform: str) -> Tuple[float, float]:
    """``(low, high)`` from a number ``a`` (meaning ``(-|a|, |a|)``) or a
    pair; a clear ``ValueError`` naming ``transform`` and ``name`` else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        a = abs(require_finite_number(value, name, transform))
        return -a, a
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f'{transform}: {name} must be a number or a (low, high) pair, '
                         f'got {value!r}') from None
    if not (math.isfinite(low) and math.isfinite(high)):
        # an infinite end draws infinite values, NaN where they meet a zero weight
        raise ValueError(f'{transform}: {name} range ({low}, {high}) must be finite')
    if low > high:
        raise ValueError(f'{transform}: {name} range ({low}, {high}) has low > high')
    return low, high


def uniform(low: Union[float, Tensor], high: Union[float, Tensor], shape: Sequence[int],
             like: Tensor) -> Tensor:
    """``U(low, high)`` of ``shape`` on ``like``'s device and dtype. A fixed
    range ``low == high`` still draws, so the RNG stream does not depend on
    whether a range is degenerate."""
    u = torch.rand(tuple(shape), device=like.device, dtype=like.dtype)
    return low + (high - low) * u


class WeightSpaceTransform(BaseTransform):
    r"""Base of the transforms that change a network's weights and biases.

    ``forward`` accepts a :class:`~torch_geometric.data.Data` or a
    :class:`~torch_geometric.data.Batch`:

    * one graph, or a batch whose graphs share one architecture and one
      activation: :meth:`apply` ``(data, sample(data))``, one tensor operation
      per layer for the whole batch, independent draws per graph;
    * any other batch: a per-graph fallback (own draws per graph), written
      back into a shallow copy of the batch.

    Subclasses implement ``_check(acts, sizes)`` (refuse what they do not
    admit), ``_draw(sizes, acts, batch_shape, like)`` (the randomness; a
    leading ``batch_shape`` of ``()`` or ``(B,)``) and
    ``_transform(weights, biases, params, acts)`` (deterministic, on single or
    stacked views, building new tensors).
    """

    #: Whether ``forward`` refuses NaN and infinite parameters. Off only on an
    #: instance whose owner has just checked every input (the encoder's
    #: ``CanonicalSigns``): the check reads a number back, a device sync.
    check_finite: bool = True

    # -- subclass hooks -------------------------------------------------- #
    def _check(self, acts: Tuple[str, ...], sizes: Tuple[int, ...]) -> None:
        pass

    def _draw(self, sizes: Tuple[int, ...], acts: Tuple[str, ...], batch_shape: Tuple[int, ...],
              like: Tensor) -> Params:
        raise NotImplementedError

    def _transform(self, weights: List[Tensor], biases: List[Tensor], params: Params,
                   acts: Tuple[str, ...]) -> Layers:
        raise NotImplementedError

    # -- public ---------------------------------------------------------- #
    def sample(self, data: Graph) -> Params:
        """Draws this transform's randomness for one graph, or for every graph
        of a batch of one architecture and activation (leading dimension
        ``B``), from torch's global RNG.

        Raises:
            ValueError: the graph's activation does not admit the transform,
                or a batch mixes architectures or activations.
        """
        sizes, acts, batch_shape = self._signature(data)
        self._check(acts, sizes)
        return self._draw(sizes, acts, batch_shape, data.edge_attr)

    def apply(self, data: Graph, params: Params) -> Graph:
        """The transform with the given draws (from :meth:`sample`); a new
        graph or batch, ``data`` is not modified.

        Raises:
            ValueError: as :meth:`sample`, or a NaN or infinite parameter
                (naming the graph).
        """
        sizes, acts, batch_shape = self._signature(data)
        self._check(acts, sizes)
        require_finite(data, self.__class__.__name__)
        return self._apply(data, params, acts, batch_shape)

    def forward(self, data: Graph) -> Graph:
        """``apply(data, sample(data))``; a graph holding a NaN or infinity is
        refused with a ``ValueError`` naming it (unless :attr:`check_finite`
        is off)."""
        if not self.check_finite:
            return self._forward(data)
        # on the input: every transform keeps finite graphs finite (tested),
        # so one check here covers what it returns, and the next transform
        # of a chain skips it
        require_finite(data, self.__class__.__name__)
        return mark_screened(self._forward(data))

    def _forward(self, data: Graph) -> Graph:
        if isinstance(data, Batch) and not _stackable(data):
            return self._forward_per_graph(data)
        # sample + apply, with the graph's signature worked out once
        sizes, acts, batch_shape = self._signature(data)
        self._check(acts, sizes)
        params = self._draw(sizes, acts, batch_shape, data.edge_attr)
        return self._apply(data, params, acts, batch_shape)

    # -- internals ------------------------------------------------------- #
    def _signature(self, data: Graph) -> Tuple[Tuple[int, ...], Tuple[str, ...], Tuple[int, ...]]:
        if getattr(data, 'edge_attr', None) is None or getattr(data, 'activation', None) is None:
            raise ValueError(f'{self.__class__.__name__} needs a parameter graph (with edge_attr, '
                             f'activation and layer_sizes or layer), got {data}')
        if isinstance(data, Batch):
            if not _stackable(data):
                raise ValueError(f'{self.__class__.__name__}.sample/apply need one graph or a batch '
                                 f'of one architecture and activation, got architectures '
                                 f'{sorted(set(architecture(data)))} and activations '
                                 f'{sorted(set(map(str, activations(data))))}; call the transform '
                                 f'itself for the per-graph fallback')
            sizes = architecture(data)[0]
            return sizes, A.per_layer(activations(data)[0], len(sizes) - 1), (data.num_graphs,)
        sizes = architecture(data)
        if len(sizes) != 1:
            raise ValueError(f'{self.__class__.__name__} got a Data holding the layer sizes of '
                             f'{len(sizes)} graphs; pass a Batch (Batch.from_data_list)')
        sizes = sizes[0]
        return sizes, A.per_layer(activations(data)[0], len(sizes) - 1), ()

    def _apply(self, data: Graph, params: Params, acts: Tuple[str, ...],
               batch_shape: Tuple[int, ...]) -> Graph:
        if batch_shape:
            weights, biases = stacked_layer_views(data, check=False)
            weights, biases = self._transform(list(weights), list(biases), params, acts)
            return with_stacked_layers(data, weights, biases)
        weights, biases = layer_views(data, check=False)
        weights, biases = self._transform(list(weights), list(biases), params, acts)
        return with_layers(data, weights, biases)

    def _forward_per_graph(self, batch: Batch) -> Batch:
        c_edge, c_node = batch.edge_attr.size(-1), batch.x.size(-1)
        node_ptr = batch.ptr.tolist()
        edge_parts, x_parts = [], []
        acts_all = activations(batch)
        for i, (sizes, (weights, biases)) in enumerate(zip(architecture(batch),
                                                           graph_layer_views(batch, check=False))):
            acts = A.per_layer(acts_all[i], len(sizes) - 1)
            self._check(acts, sizes)
            params = self._draw(sizes, acts, (), batch.edge_attr)
            weights, biases = self._transform(list(weights), list(biases), params, acts)
            edge_parts += [w.reshape(-1, c_edge) for w in weights]
            x_parts += [batch.x[node_ptr[i]:node_ptr[i] + sizes[0]]]
            x_parts += [b.reshape(-1, c_node) for b in biases]
        out = copy.copy(batch)
        out.edge_attr = torch.cat(edge_parts)
        out.x = torch.cat(x_parts)
        return out


def _stackable(batch: Batch) -> bool:
    sizes, acts = architecture(batch), activations(batch)
    return all(s == sizes[0] for s in sizes) and all(a == acts[0] for a in acts)
