"""The parameter graph: one :class:`torch_geometric.data.Data` per network.

Neurons are nodes, weights are edges ``u -> v`` (``u`` in layer ``l``, ``v`` in
layer ``l+1``), biases are channel 0 of the node features (0 for inputs).
Nodes and edges are in *canonical order* (see ``DESIGN.md``): layer by layer,
and inside a layer row-major over ``W_l`` of shape ``[d_{l+1}, d_l]``, so every
weight matrix and bias vector is a plain view of ``edge_attr`` and ``x``.

This module is the schema in code: build a graph from weights, view its layers
(for one graph or a whole :class:`~torch_geometric.data.Batch`), turn it back
into weights, a state dict or a module, and evaluate it. The layout of an
architecture and the reader of a graph's architecture live in
:mod:`nngraph.schema` (its public names are re-exported here). It depends on
nothing in the package but :mod:`nngraph.schema` and :mod:`nngraph.activations`.
"""
from __future__ import annotations

import copy
import functools
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from nngraph import activations as A
from nngraph._atomic import atomic_path
from nngraph.schema import (Graph, activations, architecture, check_sizes, is_uniform, layer_offsets, num_graphs,
                            structure, structure_on, validate)

Layers = Tuple[List[Tensor], List[Tensor]]

__all__ = [
    'from_weights', 'layer_offsets', 'structure', 'layer_views', 'to_weights',
    'with_layers', 'is_uniform', 'stacked_layer_views', 'with_stacked_layers',
    'graph_layer_views', 'architecture', 'to_state_dict', 'to_module', 'forward',
    'to_networkx', 'draw', 'sequential_names', 'permute_hidden', 'rescale_hidden',
    'activations', 'validate', 'save', 'load', 'check_finite', 'read_weights_only',
]


# --------------------------------------------------------------------------- #
# Building
# --------------------------------------------------------------------------- #

def from_weights(
    weights: Sequence[Tensor],
    biases: Optional[Sequence[Optional[Tensor]]] = None,
    activation: A.ActivationSpec = 'relu',
    *,
    y: Optional[Tensor] = None,
    names: Optional[Sequence[str]] = None,
    layer_bias: Optional[Sequence[bool]] = None,
    convention: str = '',
    **extra,
) -> Data:
    r"""Builds the parameter graph of the MLP
    :math:`f(x) = W_{L-1}\,\sigma(\dots \sigma(W_0 x + b_0) \dots) + b_{L-1}`.

    Args:
        weights: ``W_l`` of shape ``[d_{l+1}, d_l]``, input layer first.
        biases: ``b_l`` of shape ``[d_{l+1}]``; ``None`` (all or some) means zeros.
        activation: one activation string for all hidden layers (the last layer
            is linear), or one string per layer (see :mod:`nngraph.activations`).
        y: optional label stored as ``data.y``.
        names: optional module path of each layer (``'encoder.fc1'``), used by
            :func:`to_state_dict` to give back the original keys; default
            :func:`sequential_names`.
        layer_bias: whether each layer had a bias (:func:`to_state_dict`
            leaves out the bias key where not); default all ``True``.
        convention: the SIREN conventions the weights were fitted under
            (:func:`nngraph.inr.parse_convention`); ``''`` for none.
        **extra: further graph-level attributes stored as they are.

    The weights are copied into the graph in their own dtype, so
    :func:`to_weights` gives them back bit for bit.

    Raises:
        ValueError: shapes that do not chain, biases of the wrong length,
            NaN or Inf values, an unknown activation.
    """
    if len(weights) == 0:
        raise ValueError('from_weights needs at least one weight matrix')
    if biases is None:
        biases = [None] * len(weights)
    if len(biases) != len(weights):
        raise ValueError(f'got {len(weights)} weight matrices but {len(biases)} biases')
    sizes = [None] * (len(weights) + 1)
    for l, w in enumerate(weights):
        if not isinstance(w, Tensor) or w.dim() != 2:
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f'weight of layer {l} must be a 2-D tensor [d_out, d_in], got {shape}')
        if l > 0 and w.shape[1] != sizes[l]:
            raise ValueError(f'weight of layer {l} has shape {tuple(w.shape)} but layer {l - 1} '
                             f'outputs {sizes[l]} features')
        sizes[l], sizes[l + 1] = w.shape[1], w.shape[0]
    layer_sizes = check_sizes(sizes)
    dtype = weights[0].dtype
    if not dtype.is_floating_point:
        raise ValueError(f'weights must be floating point, got {dtype}')
    if any(w.dtype != dtype for w in weights):
        raise ValueError(f'all weights must share one dtype, got {sorted({str(w.dtype) for w in weights})}')

    device = weights[0].device
    bias_list = [_zeros(layer_sizes[0], dtype, device)]   # input neurons have no bias
    for l, b in enumerate(biases):
        d_out = layer_sizes[l + 1]
        if b is None:
            b = _zeros(d_out, dtype, device)
        elif not isinstance(b, Tensor) or b.shape != (d_out,):
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f'bias of layer {l} must have shape ({d_out},), got {shape}')
        elif b.dtype != dtype:
            raise ValueError(f'bias of layer {l} has dtype {b.dtype} but the weights are {dtype}')
        bias_list.append(b)

    edge_attr = torch.cat([w.reshape(-1) for w in weights]).unsqueeze(-1)   # [E, 1]
    x = torch.cat(bias_list).unsqueeze(-1)                                   # [N, 1]
    # One reduction instead of two elementwise passes: NaN and Inf propagate through
    # the sum. A finite sum that overflows is a false alarm the exact check clears.
    if not math.isfinite(edge_attr.sum().item() + x.sum().item()):
        _raise_nonfinite(weights, biases, names)

    act = _compact(activation if isinstance(activation, str) else tuple(activation), len(weights))
    L = len(weights)
    if names is None:
        names = sequential_names(L)
    elif len(names) != L:
        raise ValueError(f'got {len(names)} layer names for {L} layers')
    if layer_bias is None:
        layer_bias = _all_true(L)
    elif len(layer_bias) != L:
        raise ValueError(f'got {len(layer_bias)} layer_bias flags for {L} layers')
    if not isinstance(convention, str):
        raise ValueError(f'convention must be a string, got {type(convention).__name__}')
    edge_index, layer = structure_on(layer_sizes, device)
    # Data(**fields) routes every field through two __setattr__ layers and a cache
    # purge, half the cost of a build; a fresh Data has no cache, so filling its
    # store's mapping directly gives the identical object. Every graph carries the
    # same attribute set (DESIGN.md), so graphs of any constructor batch together.
    data = Data()
    data._store._mapping.update(x=x, edge_index=edge_index.clone(), edge_attr=edge_attr,
                                layer=layer.clone(), layer_sizes=layer_sizes, activation=act,
                                layer_names=tuple(names), layer_bias=tuple(map(bool, layer_bias)),
                                convention=convention)
    if y is not None:
        data.y = y
    for key, value in extra.items():
        data[key] = value
    return data


def _raise_nonfinite(weights, biases, names) -> None:
    for l, (w, b) in enumerate(zip(weights, biases)):
        label = f"'{names[l]}'" if names is not None else str(l)
        for kind, t in (('weight', w), ('bias', b)):
            if t is not None and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f'{kind} of layer {label} holds {bad} NaN or Inf value(s)')


# Small per-call constants, cached: they are never written to (torch.cat copies them).
@functools.lru_cache(maxsize=256)
def _zeros(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.zeros(n, dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _all_true(n: int) -> Tuple[bool, ...]:
    return (True,) * n



@functools.lru_cache(maxsize=256)
def _compact(activation: Union[str, Tuple[str, ...]], num_layers: int) -> Union[str, Tuple[str, ...]]:
    return A.compact(A.per_layer(activation, num_layers))


# --------------------------------------------------------------------------- #
# Views of one graph
# --------------------------------------------------------------------------- #

def _sizes_of(g: Data) -> Tuple[int, ...]:
    if isinstance(g, Batch):
        raise TypeError('expected a single graph; use stacked_layer_views or graph_layer_views '
                        'for a Batch')
    sizes = architecture(g)
    if len(sizes) != 1:
        raise TypeError(f'expected a single graph, got the layer sizes of {len(sizes)} graphs '
                        f'(a collated Data?); use Batch.from_data_list and graph_layer_views')
    return sizes[0]


@functools.lru_cache(maxsize=256)
def _split_plan(layer_sizes: Tuple[int, ...]) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[Tuple[int, int], ...]]:
    """Edge counts per layer, node counts per layer, and each ``W_l``'s shape."""
    shapes = tuple((layer_sizes[l + 1], layer_sizes[l]) for l in range(len(layer_sizes) - 1))
    return tuple(o * i for o, i in shapes), layer_sizes, shapes


def layer_views(g: Data, *, check: bool = True) -> Layers:
    """Per-layer views (no copies) of one graph's parameters.

    Returns ``(weights, biases)``: ``weights[l]`` is ``[d_{l+1}, d_l, C_edge]``
    and ``biases[l]`` is ``[d_{l+1}, C_node]``, views into ``g.edge_attr`` and
    ``g.x``. Read them; build new tensors to change a graph (:func:`with_layers`).

    ``check=False`` skips :func:`validate` (O(N + E)) and checks tensor sizes
    only: for a per-sample path whose graphs were checked where they entered.
    """
    if check:
        validate(g)
    edge_counts, node_counts, shapes = _split_plan(_sizes_of(g))
    edge_attr = g.edge_attr
    c_edge = edge_attr.size(-1)
    weights = [w.view(d_out, d_in, c_edge)
               for w, (d_out, d_in) in zip(edge_attr.split(edge_counts), shapes)]
    return weights, list(g.x.split(node_counts)[1:])


def to_weights(g: Data) -> Layers:
    """Bit-exact inverse of :func:`from_weights`: ``(weights, biases)`` with
    ``weights[l]`` of shape ``[d_{l+1}, d_l]`` and ``biases[l]`` of shape
    ``[d_{l+1}]`` (channel 0 of the edge and node features), as new tensors.

    Raises:
        ValueError: ``g`` is not a parameter graph in canonical order
            (:func:`validate`), or its parameters hold NaN or Inf.
    """
    if isinstance(g, Batch):
        raise TypeError('to_weights takes a single graph; use graph_layer_views or '
                        'batch.to_data_list() for a Batch')
    weights, biases = layer_views(g)
    check_finite(g)   # from_weights refuses NaN and Inf; its inverse does too
    return [w[..., 0].clone() for w in weights], [b[:, 0].clone() for b in biases]


def with_layers(g: Data, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Data:
    """A shallow copy of ``g`` whose parameters are ``weights`` and ``biases``
    (shaped as :func:`layer_views` returns them, or without the channel dim).
    The input-layer node features are kept; ``g`` itself is not modified."""
    d_in = _sizes_of(g)[0]
    x = g.x
    c_edge, c_node = g.edge_attr.size(-1), x.size(-1)
    out = copy.copy(g)
    out.edge_attr = torch.cat([w.reshape(-1, c_edge) for w in weights])
    out.x = torch.cat([x[:d_in], *(b.reshape(-1, c_node) for b in biases)])
    return out



def stacked_layer_views(g: Graph, *, check: bool = True) -> Layers:
    """Per-layer views of a batch of graphs of one architecture, stacked:
    ``weights[l]`` is ``[B, d_{l+1}, d_l, C_edge]``, ``biases[l]`` is
    ``[B, d_{l+1}, C_node]``. No copies; one tensor per layer for all graphs.
    ``check`` as in :func:`layer_views`.

    Raises:
        ValueError: the graphs do not share one architecture, or are not in
            canonical order (:func:`validate`).
    """
    sizes_all = validate(g) if check else architecture(g)
    if not all(s == sizes_all[0] for s in sizes_all):
        raise ValueError(f'graphs of different architectures in one batch '
                         f'({sorted(set(sizes_all))}); use graph_layer_views')
    sizes, B = sizes_all[0], num_graphs(g)
    node_off, edge_off = layer_offsets(sizes)
    ea = g.edge_attr.view(B, edge_off[-1], -1)
    x = g.x.view(B, node_off[-1], -1)
    weights = [ea[:, edge_off[l]:edge_off[l + 1]].view(B, sizes[l + 1], sizes[l], -1)
               for l in range(len(sizes) - 1)]
    biases = [x[:, node_off[l + 1]:node_off[l + 2]] for l in range(len(sizes) - 1)]
    return weights, biases


def with_stacked_layers(g: Graph, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Graph:
    """A shallow copy of a uniform batch with new stacked parameters, shaped as
    :func:`stacked_layer_views` returns them (channel dim optional)."""
    sizes, B = architecture(g)[0], num_graphs(g)
    c_edge, c_node = g.edge_attr.size(-1), g.x.size(-1)
    out = copy.copy(g)
    out.edge_attr = torch.cat([w.reshape(B, -1, c_edge) for w in weights], dim=1).reshape(-1, c_edge)
    x_in = g.x.view(B, -1, c_node)[:, :sizes[0]]
    out.x = torch.cat([x_in] + [b.reshape(B, -1, c_node) for b in biases], dim=1).reshape(-1, c_node)
    return out


def graph_layer_views(g: Graph, *, check: bool = True) -> List[Layers]:
    """Per-graph, per-layer views of a batch of any architectures:
    ``result[i]`` is :func:`layer_views` of graph ``i`` (views, no copies).
    ``check`` as in :func:`layer_views`."""
    if not isinstance(g, Batch):
        return [layer_views(g, check=check)]
    node_ptr = g.ptr.tolist()
    edge_ptr = g._slice_dict['edge_attr'].tolist()
    out = []
    for i, sizes in enumerate(validate(g) if check else architecture(g)):
        node_off, edge_off = layer_offsets(sizes)
        ea = g.edge_attr[edge_ptr[i]:edge_ptr[i + 1]]
        x = g.x[node_ptr[i]:node_ptr[i + 1]]
        out.append(([ea[edge_off[l]:edge_off[l + 1]].view(sizes[l + 1], sizes[l], -1)
                     for l in range(len(sizes) - 1)],
                    [x[node_off[l + 1]:node_off[l + 2]] for l in range(len(sizes) - 1)]))
    return out


# --------------------------------------------------------------------------- #
# Layer algebra: the hidden-neuron symmetries, on single or stacked views
# --------------------------------------------------------------------------- #

def permute_hidden(weights: Sequence[Tensor], biases: Sequence[Tensor],
                   perms: Sequence[Tensor]) -> Layers:
    """Reorders hidden neurons: new neuron ``i`` of hidden layer ``l+1`` is old
    neuron ``perms[l][..., i]``, with its incoming weights, bias and outgoing
    weights. The function is unchanged (for every activation).

    Works on :func:`layer_views` (``perms[l]`` of shape ``[d_{l+1}]``) and on
    :func:`stacked_layer_views` (``[B, d_{l+1}]``, one permutation per graph).
    ``perms`` holds one index tensor per hidden layer (``L - 1`` of them); an
    entry may be ``None`` to leave that layer as it is.
    """
    weights, biases = list(weights), list(biases)
    if len(perms) != len(weights) - 1:
        raise ValueError(f'expected {len(weights) - 1} permutations (one per hidden layer), got {len(perms)}')
    for l, p in enumerate(perms):
        if p is None:
            continue
        weights[l] = _take(weights[l], p, dim=weights[l].dim() - 3)               # rows
        biases[l] = _take(biases[l], p, dim=biases[l].dim() - 2)
        weights[l + 1] = _take(weights[l + 1], p, dim=weights[l + 1].dim() - 2)  # columns
    return weights, biases


def _take(t: Tensor, index: Tensor, dim: int) -> Tensor:
    """``t`` indexed along ``dim`` by ``index`` (``[d]``, or ``[B, d]`` for
    stacked views whose leading dim is ``B``). ``index_select`` / ``gather``
    with an expanded (not materialised) index: 2-4x faster than
    ``take_along_dim``, which broadcasts the index to ``t``'s full shape."""
    if index.dim() == 1:
        return t.index_select(dim, index)
    shape = [1] * t.dim()
    shape[:index.dim() - 1] = index.shape[:-1]
    shape[dim] = index.shape[-1]
    full = list(t.shape)
    full[dim] = index.shape[-1]
    return torch.gather(t, dim, index.reshape(shape).expand(full))


def rescale_hidden(weights: Sequence[Tensor], biases: Sequence[Tensor],
                   scales: Sequence[Tensor]) -> Layers:
    r"""Multiplies each hidden neuron's incoming weights and bias by :math:`c`
    and divides its outgoing weights by :math:`c`.

    With :math:`c = \pm 1` this is a sign flip (function-preserving for odd
    activations); with :math:`c > 0` a positive rescaling (function-preserving
    for positively homogeneous ones). ``scales[l]`` is ``[d_{l+1}]`` or
    ``[B, d_{l+1}]``, like ``perms`` in :func:`permute_hidden`.
    """
    weights, biases = list(weights), list(biases)
    if len(scales) != len(weights) - 1:
        raise ValueError(f'expected {len(weights) - 1} scale vectors (one per hidden layer), got {len(scales)}')
    for l, c in enumerate(scales):
        if c is None:
            continue
        c = c.to(weights[l].dtype)
        weights[l] = weights[l] * c[..., :, None, None]
        biases[l] = biases[l] * c[..., :, None]
        weights[l + 1] = weights[l + 1] / c[..., None, :, None]
    return weights, biases


# --------------------------------------------------------------------------- #
# Back to networks
# --------------------------------------------------------------------------- #

@functools.lru_cache(maxsize=64)
def sequential_names(num_layers: int) -> Tuple[str, ...]:
    """Layer names of the ``nn.Sequential`` that :func:`to_module` builds."""
    return tuple(str(2 * l) for l in range(num_layers))


def to_state_dict(g: Data) -> Dict[str, Tensor]:
    """The state dict of the network ``g`` encodes, bit for bit.

    Keys are the original layer names where the graph recorded them
    (:func:`nngraph.from_module`, :func:`nngraph.from_checkpoint`), else those
    of :func:`to_module`. Layers that had no bias get no bias key.
    """
    weights, biases = to_weights(g)
    names = getattr(g, 'layer_names', None) or sequential_names(len(weights))
    has_bias = getattr(g, 'layer_bias', None) or (True,) * len(weights)
    state = {}
    for name, w, b, keep in zip(names, weights, biases, has_bias):
        state[f'{name}.weight'] = w
        if keep:
            state[f'{name}.bias'] = b
    return state


def to_module(g: Data) -> nn.Sequential:
    """An ``nn.Sequential`` of ``Linear`` and activation modules computing the
    function ``g`` encodes (``Linear`` layers at even indices)."""
    weights, biases = to_weights(g)
    acts = A.per_layer(activations(g)[0], len(weights))
    mods: List[nn.Module] = []
    for l, (w, b) in enumerate(zip(weights, biases)):
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype, device=w.device)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        mods.append(lin)
        if l + 1 < len(weights) or acts[l] != 'identity':
            mods.append(A.get(acts[l]).module())
    return nn.Sequential(*mods)


def forward(g: Graph, inputs: Tensor, *, all_layers: bool = False,
            check: bool = True) -> Union[Tensor, List[Tensor]]:
    """Evaluates the network(s) a graph or a batch encodes.

    Args:
        g: one graph, or a :class:`~torch_geometric.data.Batch` of ``B`` graphs
            of one architecture (activations may differ between graphs).
        inputs: ``[..., d_0]`` for one graph; for a batch ``[n, d_0]`` (the same
            points for every network) or ``[B, n, d_0]``.
        all_layers: return every layer's output (after its activation), the
            inputs first: ``L + 1`` tensors ``[..., d_l]`` (or ``[B, n, d_l]``),
            e.g. for probe features of every neuron.
        check: run :func:`validate` and :func:`check_finite` first
            (O(N + E)), so hand-edited edges and NaN parameters are refused
            rather than silently read; ``False`` for graphs already checked,
            as the encoder's probe features do.

    Returns:
        ``[..., d_L]`` for one graph, ``[B, n, d_L]`` for a batch; one batched
        matmul per layer, no loop over graphs.
    """
    if check:
        validate(g)
        check_finite(g)
    if not isinstance(inputs, Tensor):
        raise ValueError(f'inputs must be a tensor, got a {type(inputs).__name__}')
    if inputs.dtype != g.edge_attr.dtype:
        raise ValueError(f'inputs are {inputs.dtype} but the network\'s weights are {g.edge_attr.dtype}')
    if isinstance(g, Batch):
        weights, biases = stacked_layer_views(g, check=False)
        d_in, B = weights[0].shape[2], g.num_graphs
        if inputs.dim() == 2:
            inputs = inputs.unsqueeze(0).expand(B, -1, -1)
        if inputs.dim() != 3 or inputs.shape[0] != B or inputs.shape[-1] != d_in:
            raise ValueError(f'inputs for a batch of {B} networks with {d_in} inputs must be '
                             f'[n, {d_in}] or [{B}, n, {d_in}], got {tuple(inputs.shape)}')
        acts_all = activations(g)
        if acts_all.count(acts_all[0]) == len(acts_all):
            acts = A.per_layer(acts_all[0], len(weights))
        else:   # one architecture, several activations: one call per activation per layer
            acts = _activation_groups(tuple(acts_all), len(weights), str(inputs.device))

        def affine(h: Tensor, w: Tensor, b: Tensor) -> Tensor:       # [B, n, d_l] -> [B, n, d_{l+1}]
            return torch.baddbmm(b[..., 0].unsqueeze(1), h, w[..., 0].transpose(1, 2))
    else:
        weights, biases = layer_views(g, check=False)
        if inputs.shape[-1] != weights[0].shape[1]:
            raise ValueError(f'inputs have {inputs.shape[-1]} features but the network takes '
                             f'{weights[0].shape[1]}')
        acts = A.per_layer(activations(g)[0], len(weights))

        def affine(h: Tensor, w: Tensor, b: Tensor) -> Tensor:       # [..., d_l] -> [..., d_{l+1}]
            # nn.Linear's own product on a fresh copy: a view into edge_attr
            # starts wherever the layer's offset puts it, and BLAS picks its
            # kernel (so its rounding) by alignment; the allocator aligns a
            # fresh tensor as it aligns nn.Linear's weight, so the two agree
            # bit for bit (a few hundred bytes copied for an INR)
            return F.linear(h, w[..., 0].clone(), b[:, 0].clone())

    h, outputs = inputs, [inputs]
    for l, (w, b) in enumerate(zip(weights, biases)):
        z = affine(h, w, b)
        if isinstance(acts[l], str):
            h = A.get(acts[l])(z)
        else:                                     # [(activation, graph indices), ...]
            h = torch.empty_like(z)
            for name, idx in acts[l]:
                h[idx] = A.get(name)(z[idx])
        outputs.append(h)
    return outputs if all_layers else h


@functools.lru_cache(maxsize=64)
def _activation_groups(acts_all: Tuple, num_layers: int, device: str) -> Tuple:
    """Per layer: one activation string, or ``((name, graph indices), ...)``
    when the graphs of a batch differ there."""
    per_graph = [A.per_layer(a, num_layers) for a in acts_all]
    out = []
    for l in range(num_layers):
        names = [p[l] for p in per_graph]
        if names.count(names[0]) == len(names):
            out.append(names[0])
        else:
            out.append(tuple((n, torch.tensor([i for i, m in enumerate(names) if m == n], device=device))
                             for n in sorted(set(names))))
    return tuple(out)


# --------------------------------------------------------------------------- #
# Inspection
# --------------------------------------------------------------------------- #

def to_networkx(g: Data):
    """A ``networkx.DiGraph`` with node attributes ``layer`` and ``bias`` and
    edge attribute ``weight`` (channel 0), for inspection and drawing.

    Raises:
        ValueError: ``g`` is not a parameter graph in canonical order (:func:`validate`).
    """
    from torch_geometric.utils import to_networkx as pyg_to_networkx
    validate(g)
    view = Data(edge_index=g.edge_index, num_nodes=g.num_nodes,
                layer=g.layer, bias=g.x[:, 0], weight=g.edge_attr[:, 0])
    return pyg_to_networkx(view, node_attrs=['layer', 'bias'], edge_attrs=['weight'])


def draw(g: Data, path: Union[str, os.PathLike], *, max_edges: int = 20_000, dpi: int = 150) -> None:
    """Saves a PNG of a small parameter graph: layers left to right, edge colour
    the weight (blue negative, red positive), node colour the bias.

    Raises:
        ValueError: more than ``max_edges`` edges (the picture would be a blur).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import networkx as nx

    if g.num_edges > max_edges:
        raise ValueError(f'graph has {g.num_edges} edges, more than max_edges={max_edges}')
    nxg = to_networkx(g)
    pos = nx.multipartite_layout(nxg, subset_key='layer')
    w = g.edge_attr[:, 0].detach().float().cpu()
    b = g.x[:, 0].detach().float().cpu()
    wmax = max(float(w.abs().max()), 1e-12)
    bmax = max(float(b.abs().max()), 1e-12)
    sizes = _sizes_of(g)
    fig, ax = plt.subplots(figsize=(2.2 * len(sizes) + 2, 6))
    nx.draw_networkx_edges(
        nxg, pos, ax=ax, edge_color=w.tolist(), edge_cmap=plt.cm.coolwarm, edge_vmin=-wmax,
        edge_vmax=wmax, width=0.8, arrows=False, alpha=0.8)
    nodes = nx.draw_networkx_nodes(
        nxg, pos, ax=ax, node_color=b.tolist(), cmap=plt.cm.PiYG, vmin=-bmax, vmax=bmax,
        node_size=max(20, 300 - 2 * g.num_nodes), edgecolors='black', linewidths=0.5)
    fig.colorbar(plt.cm.ScalarMappable(cmap=plt.cm.coolwarm, norm=plt.Normalize(-wmax, wmax)),
                 ax=ax, label='weight', fraction=0.04)
    fig.colorbar(nodes, ax=ax, label='bias', fraction=0.04)
    act = activations(g)[0]
    act = act if isinstance(act, str) else ', '.join(act)
    ax.set_title(f'layers {"-".join(map(str, sizes))}, activation {act}')
    ax.axis('off')
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format='png')
    plt.close(fig)


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #

_FORMAT = 'nngraph.graphs'
_KINDS = ('data', 'batch', 'list')
# What a graph-level field of a saved graph may hold: what from_weights and the
# data sets write (tensors, strings, numbers, and tuples or lists of them).
_PLAIN = (Tensor, str, int, float, bool, type(None))


def read_weights_only(path: Union[str, os.PathLike], what: str):
    """``torch.load(path, weights_only=True)`` on the CPU: no code or class is
    ever unpickled. Every way a file can fail to be read (empty, truncated,
    random bytes, a pickled class such as a PyG ``Data`` written by
    ``torch.save``) is one line of ``ValueError`` naming the file; ``what``
    names what the file should have been (``'a PyTorch checkpoint'``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: anything else.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f'no file at {name!r}')
    if os.path.isfile(name) and os.path.getsize(name) == 0:
        raise ValueError(f'{name!r} is empty (0 bytes), not {what}')
    try:
        return torch.load(name, map_location='cpu', weights_only=True)
    except Exception as err:  # torch.load raises a dozen types; each is the file's fault here
        text = str(err)
        pickled = re.search(r'GLOBAL ([\w.]+)', text)
        if pickled is None:
            raise ValueError(f'{name!r} is not {what} (truncated or corrupt? '
                             f'{type(err).__name__}: {_gist(text)})') from None
        global_name = pickled.group(1)
        if global_name.startswith('torch_geometric.'):
            raise ValueError(
                f'{name!r} could not be read as {what} with weights_only=True: it is a pickled PyG '
                f'Data or Batch ({global_name}) written by torch.save, not by nngraph.save, and nngraph '
                f'never unpickles classes; if you trust the file, convert it once with '
                f'nngraph.save(torch.load(path, weights_only=False), new_path)') from None
        raise ValueError(f'{name!r} could not be read as {what} with weights_only=True: it holds a '
                         f'pickled {global_name}, and nngraph never unpickles code or classes') from None


def _gist(text: str) -> str:
    """The informative first sentence of a torch.load error, for a one-line message."""
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text[text.index(marker) + len(marker):]
    line = next((line.strip() for line in text.splitlines() if line.strip()), '')
    return line.split('. ')[0][:120]


def save(graphs: Union[Graph, Sequence[Data]], path: Union[str, os.PathLike]) -> None:
    """Saves a graph, a :class:`~torch_geometric.data.Batch` or a list of graphs
    so that :func:`load` reads it back with ``torch.load(weights_only=True)``:
    no pickled classes, only tensors, strings, numbers, tuples, lists and dicts.
    Written atomically (a reader never sees half a file).

    A plain ``torch.save(graph, path)`` needs ``torch.load(path,
    weights_only=False)``, which runs arbitrary code from the file: use it only
    for files you made.

    Raises:
        ValueError: a graph that is not a parameter graph in canonical order
            (:func:`validate`) or holds NaN or Inf parameters (graph index named).
        TypeError: an item that is not a ``Data``.
    """
    if isinstance(graphs, Batch):
        _check_graph(graphs, 'save: ')
        kind, items = 'batch', graphs.to_data_list()
    elif isinstance(graphs, Data):
        kind, items = 'data', [graphs]
    else:
        kind, items = 'list', list(graphs)
    for i, g in enumerate(items):
        if not isinstance(g, Data) or isinstance(g, Batch):
            raise TypeError(f'save: item {i} is a {type(g).__name__}, not a Data')
        _check_graph(g, f'save: graph {i}: ')
    record = {'format': _FORMAT, 'version': 1, 'kind': kind, 'graphs': [g.to_dict() for g in items]}
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def load(path: Union[str, os.PathLike], map_location=None) -> Union[Graph, List[Data]]:
    """Reads what :func:`save` wrote (``torch.load(weights_only=True)``: safe on
    files from others): a ``Data``, a ``Batch`` or a list, as it was saved.
    Every graph is checked as it enters (:func:`validate`, and finite
    parameters), so a hand-edited or corrupt file is refused here, not later.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: in one line naming the file: an empty, truncated or random
            file; a ``torch.save`` of a PyG ``Data`` (how to convert it, if
            trusted); a file not written by :func:`save`; a malformed one
            (missing keys, wrong types; the key named); a graph that is not a
            parameter graph or holds NaN or Inf (its index named).
    """
    name = os.fspath(path)
    record = read_weights_only(name, 'a file of graphs written by nngraph.save')
    if not isinstance(record, dict) or record.get('format') != _FORMAT:
        held = (f'a dict with keys {sorted(map(str, record))[:6]}' if isinstance(record, dict)
                else f'a {type(record).__name__}')
        raise ValueError(f'{name!r} was not written by nngraph.save (it holds {held}); a graph saved '
                         f'with torch.save needs torch.load(weights_only=False) (trusted files only)')
    missing = [k for k in ('version', 'kind', 'graphs') if k not in record]
    if missing:
        raise ValueError(f'{name!r} is a malformed nngraph file: it has no {", ".join(map(repr, missing))}')
    if record['version'] != 1:
        raise ValueError(f"{name!r}: nngraph file version {record['version']!r}; this nngraph reads version 1")
    kind, items = record['kind'], record['graphs']
    if kind not in _KINDS:
        raise ValueError(f"{name!r} is a malformed nngraph file: 'kind' is {kind!r}, expected one of {_KINDS}")
    if not isinstance(items, list) or (kind != 'list' and not items) or (kind == 'data' and len(items) != 1):
        what = f'{len(items)} graphs' if isinstance(items, list) else f'an object of type {type(items).__name__}'
        raise ValueError(f"{name!r} is a malformed nngraph file: 'graphs' holds {what} for kind {kind!r}")
    graphs = [_graph_from_record(d, f'{name!r}: graph {i}') for i, d in enumerate(items)]
    if kind == 'data':
        return graphs[0]
    if kind == 'batch':
        try:
            return Batch.from_data_list(graphs)
        except Exception as err:  # PyG's collate: KeyError, RuntimeError, ... on graphs that differ
            raise ValueError(f'{name!r}: its graphs do not batch together '
                             f'({type(err).__name__}: {err})') from None
    return graphs


def _graph_from_record(fields, where: str) -> Data:
    """One saved graph: a dict of plain fields, checked as a parameter graph."""
    if not isinstance(fields, dict):
        raise ValueError(f'{where} is a {type(fields).__name__}, not a dict of fields')
    for key, value in fields.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f'{where}: field name {key!r} is not a name')
        if not _is_plain(value):
            raise ValueError(f'{where}: field {key!r} holds a {type(value).__name__}; saved graphs hold '
                             f'tensors, strings, numbers and tuples or lists of them')
    missing = [k for k in ('x', 'edge_index', 'edge_attr') if not isinstance(fields.get(k), Tensor)]
    if missing:
        raise ValueError(f'{where} is not a parameter graph: no tensor {", ".join(missing)}')
    try:
        g = Data.from_dict(fields)
    except Exception as err:  # Data's own setters; a name such as 'to' collides with its methods
        raise ValueError(f'{where}: not a graph ({type(err).__name__}: {err})') from None
    _check_graph(g, f'{where}: ')
    return g


def _is_plain(value, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN):
        return True
    return depth < 3 and isinstance(value, (tuple, list)) and all(_is_plain(v, depth + 1) for v in value)


def _check_graph(g: Graph, prefix: str) -> None:
    """:func:`validate` and finite parameters, each refusal prefixed by where."""
    try:
        validate(g)
        check_finite(g)
    except ValueError as err:
        raise ValueError(f'{prefix}{err}') from None


def check_finite(g: Graph) -> None:
    """Refuses a graph or batch whose weights (``edge_attr``) or biases (``x``)
    hold NaN or Inf, naming the graph, the field, the layer and the count.
    One sum per tensor and one number read back: NaN and Inf propagate
    through a sum (a finite sum that overflows is a false alarm the exact
    per-tensor test then clears); the details are computed only on failure.

    Raises:
        ValueError: a non-finite parameter.
    """
    fields = g._store._mapping       # Data.__getattr__ costs a microsecond per field
    ea, x = fields.get('edge_attr'), fields.get('x')
    if not (isinstance(ea, Tensor) and isinstance(x, Tensor)):
        return      # not a parameter graph: validate says so
    if math.isfinite(ea.sum().item() + x.sum().item()):
        return
    for field, what, t in (('edge_attr', 'weights', ea), ('x', 'biases', x)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            _raise_nonfinite_graph(g, field, what)


def _raise_nonfinite_graph(g: Graph, field: str, what: str) -> None:
    bad = ~torch.isfinite(g[field])
    while bad.dim() > 1:
        bad = bad.any(-1)
    first = int(bad.nonzero()[0])
    sizes = architecture(g)
    ptr, graph_index, local = 0, 0, first
    for i, s in enumerate(sizes):
        node_off, edge_off = layer_offsets(s)
        count = (edge_off if field == 'edge_attr' else node_off)[-1]
        if first < ptr + count:
            graph_index, local = i, first - ptr
            offsets = edge_off if field == 'edge_attr' else node_off
            layer = next(l for l in range(len(offsets) - 1) if local < offsets[l + 1])
            break
        ptr += count
    which = f'graph {graph_index}: ' if len(sizes) > 1 else ''
    unit = 'weight matrix' if field == 'edge_attr' else 'neuron layer'
    raise ValueError(f'{which}{field} ({what}) holds {int(bad.sum())} NaN or Inf value(s), the first '
                     f'in {unit} {layer} (row {local}); a network with non-finite parameters computes nothing')
