"""The parameter graph: one :class:`torch_geometric.data.Data` per network.

Neurons are nodes, weights are edges ``u -> v`` (``u`` in layer ``l``, ``v`` in
layer ``l+1``), biases are channel 0 of the node features (0 for inputs).
Nodes and edges are in *canonical order* (see ``DESIGN.md``): layer by layer,
and inside a layer row-major over ``W_l`` of shape ``[d_{l+1}, d_l]``, so every
weight matrix and bias vector is a plain view of ``edge_attr`` and ``x``.

This module is the schema in code: build a graph from weights, view its layers
(for one graph or a whole :class:`~torch_geometric.data.Batch`), turn it back
into weights, a state dict or a module, and evaluate it. It depends on nothing
in the package but :mod:`nngraph.activations`.
"""
from __future__ import annotations

import copy
import functools
import math
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from nngraph import activations as A
from nngraph._atomic import atomic_path

Graph = Union[Data, Batch]
Layers = Tuple[List[Tensor], List[Tensor]]

__all__ = [
    'from_weights', 'layer_offsets', 'structure', 'layer_views', 'to_weights',
    'with_layers', 'is_uniform', 'stacked_layer_views', 'with_stacked_layers',
    'graph_layer_views', 'architecture', 'to_state_dict', 'to_module', 'forward',
    'to_networkx', 'draw', 'sequential_names', 'permute_hidden', 'rescale_hidden',
    'activations', 'validate', 'save', 'load',
]


# --------------------------------------------------------------------------- #
# Structure: everything that depends only on the layer sizes, computed once.
# --------------------------------------------------------------------------- #

@functools.lru_cache(maxsize=256)
def layer_offsets(layer_sizes: Tuple[int, ...]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Start of each layer's nodes and of each weight matrix's edges.

    Returns ``(node_offsets, edge_offsets)`` with ``len(layer_sizes) + 1`` and
    ``len(layer_sizes)`` entries; the last entry of each is the total count.
    """
    nodes, edges = [0], [0]
    for l, d in enumerate(layer_sizes):
        nodes.append(nodes[-1] + d)
        if l + 1 < len(layer_sizes):
            edges.append(edges[-1] + layer_sizes[l + 1] * d)
    return tuple(nodes), tuple(edges)


@functools.lru_cache(maxsize=256)
def _structure(layer_sizes: Tuple[int, ...]) -> Tuple[Tensor, Tensor]:
    node_off, _ = layer_offsets(layer_sizes)
    blocks = []
    for l in range(len(layer_sizes) - 1):
        d_in, d_out = layer_sizes[l], layer_sizes[l + 1]
        # Row-major over W_l [d_out, d_in]: edge i*d_in + j goes from input j to output i.
        src = torch.arange(d_in).repeat(d_out) + node_off[l]
        dst = torch.arange(d_out).repeat_interleave(d_in) + node_off[l + 1]
        blocks.append(torch.stack([src, dst]))
    edge_index = torch.cat(blocks, dim=1)
    layer = torch.repeat_interleave(torch.arange(len(layer_sizes)), torch.tensor(layer_sizes))
    return edge_index, layer


def structure(layer_sizes: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """``(edge_index [2, E], layer [N])`` of the canonical graph of an MLP with
    these widths. Fresh tensors: the caller may keep and modify them."""
    edge_index, layer = _structure(_check_sizes(layer_sizes))
    return edge_index.clone(), layer.clone()


def _check_sizes(layer_sizes: Sequence[int]) -> Tuple[int, ...]:
    sizes = tuple(int(d) for d in layer_sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f'layer_sizes must hold at least two positive widths, got {sizes}')
    return sizes


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
    layer_sizes = _check_sizes(sizes)
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
    edge_index, layer = _structure_on(layer_sizes, device)
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
def _structure_on(layer_sizes: Tuple[int, ...], device: torch.device) -> Tuple[Tensor, Tensor]:
    edge_index, layer = _structure(layer_sizes)
    return edge_index.to(device), layer.to(device)


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
        ValueError: ``g`` is not a parameter graph in canonical order (:func:`validate`).
    """
    if isinstance(g, Batch):
        raise TypeError('to_weights takes a single graph; use graph_layer_views or '
                        'batch.to_data_list() for a Batch')
    weights, biases = layer_views(g)
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


# --------------------------------------------------------------------------- #
# Views of a batch
# --------------------------------------------------------------------------- #

def architecture(g: Graph) -> List[Tuple[int, ...]]:
    """The layer sizes of every graph in ``g`` (one entry for a single graph).

    Read from ``layer_sizes`` in whatever container PyG left it (a tuple, a
    list after ``clone`` / ``apply`` / ``to`` / ``torch.load`` / ``separate``,
    a list of per-graph tuples or lists after batching), or, where a graph has
    no ``layer_sizes``, counted from the ``layer`` tensor. Checked in O(1)
    against the sizes of ``x``, ``layer``, ``edge_attr`` and ``edge_index``;
    :func:`validate` checks the tensors' contents.

    Raises:
        ValueError: layer sizes that disagree with the graph's tensors.
    """
    # Read the store's mapping directly: this runs per sample and per batch, and
    # Data.__getattr__ costs a microsecond per field.
    fields = g._store._mapping
    sizes = fields.get('layer_sizes')
    if sizes is None:
        return _sizes_from_layer(g)
    counts = None
    if type(sizes) is tuple and not isinstance(g, Batch):     # the common case: one fresh graph
        per_graph = [sizes]
    elif len(sizes) and not isinstance(sizes[0], (tuple, list)):
        per_graph = [_as_sizes(sizes)]
    elif len(sizes) and type(sizes[0]) is tuple and sizes.count(sizes[0]) == len(sizes):
        # a batch of one architecture (read per batch, several times): one C-level scan
        per_graph, counts = [sizes[0]] * len(sizes), {sizes[0]: len(sizes)}
    else:
        per_graph = [s if type(s) is tuple else _as_sizes(s) for s in sizes]
    _check_counts(g, fields, per_graph, counts)
    return per_graph


def _as_sizes(sizes) -> Tuple[int, ...]:
    try:
        out = tuple(int(d) for d in sizes)
    except (TypeError, ValueError):
        raise ValueError(f'layer_sizes must be a sequence of ints per graph, got {sizes!r}') from None
    return out


@functools.lru_cache(maxsize=256)
def _totals(sizes: Tuple[int, ...]) -> Tuple[int, int]:
    """``(nodes, edges)`` of one architecture; refuses impossible sizes."""
    _check_sizes(sizes)
    node_off, edge_off = layer_offsets(sizes)
    return node_off[-1], edge_off[-1]


def _check_counts(g: Graph, fields: dict, per_graph: List[Tuple[int, ...]],
                  counts: Optional[Dict[Tuple[int, ...], int]] = None) -> None:
    if isinstance(g, Batch) and len(per_graph) != g.num_graphs:
        raise ValueError(f'layer_sizes holds {len(per_graph)} entries for a batch of {g.num_graphs} graphs')
    if len(per_graph) == 1:
        counts = {per_graph[0]: 1}
        nodes, edges = _totals(per_graph[0])
    else:
        counts = counts or Counter(per_graph)
        nodes = edges = 0
        for s, k in counts.items():
            n, e = _totals(s)
            nodes, edges = nodes + k * n, edges + k * e
    x, ea, layer, ei = (fields.get(k) for k in ('x', 'edge_attr', 'layer', 'edge_index'))
    if (x is None or x.size(0) == nodes) and (layer is None or layer.size(0) == nodes) \
            and (ea is None or ea.size(0) == edges) and (ei is None or ei.size(1) == edges):
        return
    got = {'x': None if x is None else x.size(0), 'layer': None if layer is None else layer.numel(),
           'edge_attr': None if ea is None else ea.size(0), 'edge_index': None if ei is None else ei.size(1)}
    want = {'x': nodes, 'layer': nodes, 'edge_attr': edges, 'edge_index': edges}
    bad = [k for k in got if got[k] is not None and got[k] != want[k]]
    if bad:
        arch = per_graph[0] if len(counts) == 1 else sorted(counts)
        many = f' for {len(per_graph)} graphs' if len(per_graph) > 1 else ''
        raise ValueError(f'layer_sizes {arch}{many} describe {nodes} nodes and {edges} edges, but '
                         + ', '.join(f'{k} has {got[k]}' for k in bad))


def _sizes_from_layer(g: Graph) -> List[Tuple[int, ...]]:
    """Layer widths counted from ``layer`` (per graph via ``batch``): one sync."""
    layer = getattr(g, 'layer', None)
    if layer is None or layer.numel() == 0:
        raise ValueError('not a parameter graph: it has neither layer_sizes nor a layer tensor')
    depth = int(layer.max()) + 1
    if isinstance(g, Batch):
        B = g.num_graphs
        counts = torch.bincount(g.batch * depth + layer, minlength=B * depth).view(B, depth)
    else:
        counts = torch.bincount(layer, minlength=depth).view(1, depth)
    per_graph = [tuple(d for d in row if d) for row in counts.tolist()]
    _check_counts(g, g._store._mapping, per_graph)
    return per_graph


def activations(g: Graph) -> List[Union[str, Tuple[str, ...]]]:
    """The ``activation`` of every graph in ``g`` (one entry for a single
    graph), each a string or a tuple of per-layer strings, whatever container
    PyG left it in: compare these, not ``g.activation``."""
    act = g.activation
    if isinstance(g, Batch):
        if isinstance(act, str):
            return [act] * g.num_graphs
        if act and isinstance(act[0], (str, tuple)) and act.count(act[0]) == len(act):
            return [act[0]] * len(act)        # one activation: one C-level scan
        return [a if isinstance(a, str) else tuple(a) for a in act]
    return [act if isinstance(act, str) else tuple(act)]


def validate(g: Graph) -> List[Tuple[int, ...]]:
    """Checks that a graph or batch is a parameter graph in canonical order:
    ``layer_sizes`` agrees with the ``layer`` tensor and ``edge_index`` holds
    exactly the canonical edges of those sizes. Returns :func:`architecture`.

    O(N + E): called where a graph enters from outside (:func:`to_weights`
    and so :func:`to_state_dict` and :func:`to_module`, :func:`to_networkx`,
    weight matching, MixUp's partner pool, the GNN encoder), not per sample
    on the augmentation path, which checks only tensor sizes (:func:`architecture`).

    Raises:
        ValueError: naming the first mismatch (which graph, which layer or edge).
    """
    per_graph = architecture(g)
    device = g.edge_index.device
    node_ptr = [0]
    for s in per_graph:
        node_ptr.append(node_ptr[-1] + _totals(s)[0])
    if getattr(g, 'layer', None) is not None:
        if len(set(per_graph)) == 1:
            expect_layer = _structure_on(per_graph[0], device)[1].repeat(len(per_graph))
        else:
            expect_layer = torch.cat([_structure_on(s, device)[1] for s in per_graph])
        if not torch.equal(g.layer, expect_layer):
            i = _first_graph_differing(g.layer != expect_layer, node_ptr)
            got = torch.bincount(g.layer[node_ptr[i]:node_ptr[i + 1]]).tolist()
            raise ValueError(f'graph {i}: layer_sizes say {per_graph[i]} but the layer tensor '
                             f'holds {tuple(got)} (neurons per layer, in canonical order)')
    if len(per_graph) == 1:
        expect_ei = _structure_on(per_graph[0], device)[0]
    elif len(set(per_graph)) == 1:     # one architecture: one broadcast, no per-graph list
        offsets = torch.tensor(node_ptr[:-1], device=device)
        canon = _structure_on(per_graph[0], device)[0]                          # [2, E]
        expect_ei = (canon.unsqueeze(1) + offsets.view(1, -1, 1)).reshape(2, -1)
    else:
        offsets = torch.tensor(node_ptr[:-1], device=device)
        edge_counts = torch.tensor([_totals(s)[1] for s in per_graph], device=device)
        expect_ei = torch.cat([_structure_on(s, device)[0] for s in per_graph], dim=1)
        expect_ei = expect_ei + offsets.repeat_interleave(edge_counts)
    if not torch.equal(g.edge_index, expect_ei):
        e = int((g.edge_index != expect_ei).any(0).nonzero()[0])
        u, v = g.edge_index[:, e].tolist()
        eu, ev = expect_ei[:, e].tolist()
        raise ValueError(f'edge_index disagrees with layer_sizes {sorted(set(per_graph))}: edge {e} '
                         f'is {u} -> {v}, the canonical order has {eu} -> {ev} (edges must be '
                         f'the dense layers, layer by layer, row-major over W_l)')
    return per_graph


def _first_graph_differing(mask: Tensor, ptr: List[int]) -> int:
    first = int(mask.nonzero()[0])
    return next(i for i in range(len(ptr) - 1) if ptr[i] <= first < ptr[i + 1])


def is_uniform(g: Graph) -> bool:
    """Whether every graph in ``g`` has the same layer sizes."""
    sizes = architecture(g)
    return all(s == sizes[0] for s in sizes)


def _num_graphs(g: Graph) -> int:
    return g.num_graphs if isinstance(g, Batch) else 1


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
    sizes, B = sizes_all[0], _num_graphs(g)
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
    sizes, B = architecture(g)[0], _num_graphs(g)
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
        check: run :func:`validate` first (O(N + E)), so hand-edited edges
            are refused rather than silently ignored; ``False`` for graphs
            already checked, as the encoder's probe features do.

    Returns:
        ``[..., d_L]`` for one graph, ``[B, n, d_L]`` for a batch; one batched
        matmul per layer, no loop over graphs.
    """
    if check:
        validate(g)
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
            return torch.addmm(b[:, 0], h.reshape(-1, h.shape[-1]), w[..., 0].t()).view(*h.shape[:-1], -1)

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


def save(graphs: Union[Graph, Sequence[Data]], path: Union[str, os.PathLike]) -> None:
    """Saves a graph, a :class:`~torch_geometric.data.Batch` or a list of graphs
    so that :func:`load` reads it back with ``torch.load(weights_only=True)``:
    no pickled classes, only tensors, strings, numbers, tuples, lists and dicts.
    Written atomically (a reader never sees half a file).

    A plain ``torch.save(graph, path)`` needs ``torch.load(path,
    weights_only=False)``, which runs arbitrary code from the file: use it only
    for files you made.
    """
    if isinstance(graphs, Batch):
        kind, items = 'batch', graphs.to_data_list()
    elif isinstance(graphs, Data):
        kind, items = 'data', [graphs]
    else:
        kind, items = 'list', list(graphs)
    for i, g in enumerate(items):
        if not isinstance(g, Data) or isinstance(g, Batch):
            raise TypeError(f'save: item {i} is a {type(g).__name__}, not a Data')
    record = {'format': _FORMAT, 'version': 1, 'kind': kind, 'graphs': [g.to_dict() for g in items]}
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def load(path: Union[str, os.PathLike], map_location=None) -> Union[Graph, List[Data]]:
    """Reads what :func:`save` wrote (``torch.load(weights_only=True)``: safe on
    files from others): a ``Data``, a ``Batch`` or a list, as it was saved.

    Raises:
        ValueError: the file was not written by :func:`save`.
    """
    record = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(record, dict) or record.get('format') != _FORMAT:
        raise ValueError(f'{os.fspath(path)!r} was not written by nngraph.save; a graph saved with '
                         f'torch.save needs torch.load(weights_only=False) (trusted files only)')
    graphs = [Data.from_dict(d) for d in record['graphs']]
    if record['kind'] == 'data':
        return graphs[0]
    if record['kind'] == 'batch':
        return Batch.from_data_list(graphs)
    return graphs
