"""The canonical layout of an MLP as a graph, and the one reader of a graph's
architecture.

Everything here depends only on the layer sizes (node and edge offsets, the
canonical ``edge_index`` and ``layer`` tensors, computed once per
architecture) or reads what a graph says about itself: :func:`architecture`
and :func:`activations` read the graph-level fields in whatever container
PyTorch Geometric left them, and :func:`validate` checks a graph's tensors
against its layer sizes (``DESIGN.md``, *What PyG may do to a graph*).
:mod:`nngraph.graph` builds, views and evaluates graphs on top of it and
re-exports its public names.
"""
from __future__ import annotations

import functools
import operator
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

Graph = Union[Data, Batch]

__all__ = ['layer_offsets', 'structure', 'architecture', 'activations', 'validate', 'is_uniform']


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
    edge_index, layer = _structure(check_sizes(layer_sizes))
    return edge_index.clone(), layer.clone()


def check_sizes(layer_sizes: Sequence[int]) -> Tuple[int, ...]:
    """``layer_sizes`` as a tuple of ints, refused unless it holds at least two
    positive integer widths (``2.5`` is not a width: it would be read as 2)."""
    try:
        sizes = tuple(operator.index(d) for d in layer_sizes)
    except TypeError:
        raise ValueError(f'layer_sizes must hold integer widths, got {layer_sizes!r}') from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f'layer_sizes must hold at least two positive widths, got {sizes}')
    return sizes


@functools.lru_cache(maxsize=256)
def structure_on(layer_sizes: Tuple[int, ...], device: torch.device) -> Tuple[Tensor, Tensor]:
    edge_index, layer = _structure(layer_sizes)
    return edge_index.to(device), layer.to(device)


# --------------------------------------------------------------------------- #
# Reading and checking a graph or batch
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
    elif not isinstance(sizes, (tuple, list)):
        raise ValueError(f'layer_sizes must be a sequence of ints per graph, got {sizes!r}')
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
        out = tuple(operator.index(d) for d in sizes)
    except TypeError:
        raise ValueError(f'layer_sizes must be a sequence of ints per graph, got {sizes!r}') from None
    return out


@functools.lru_cache(maxsize=256)
def _totals(sizes: Tuple[int, ...]) -> Tuple[int, int]:
    """``(nodes, edges)`` of one architecture; refuses impossible sizes."""
    check_sizes(sizes)
    node_off, edge_off = layer_offsets(sizes)
    return node_off[-1], edge_off[-1]


def _check_counts(g: Graph, fields: dict, per_graph: List[Tuple[int, ...]],
                  counts: Optional[Dict[Tuple[int, ...], int]] = None) -> None:
    if isinstance(g, Batch) and len(per_graph) != g.num_graphs:
        raise ValueError(f'layer_sizes holds {len(per_graph)} entries for a batch of {g.num_graphs} graphs')
    if len(per_graph) == 1:
        counts = {per_graph[0]: 1}
        try:
            nodes, edges = _totals(per_graph[0])
        except TypeError:   # an unhashable or non-integer entry in a tuple nobody built with from_weights
            raise ValueError(f'layer_sizes must be a sequence of ints, got {per_graph[0]!r}') from None
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
    if not isinstance(layer, Tensor) or layer.numel() == 0:
        raise ValueError('not a parameter graph: it has neither layer_sizes nor a layer tensor')
    _check_layer(layer)
    low, high = (int(v) for v in layer.aminmax())
    if low < 0:
        raise ValueError(f'the layer tensor holds layer index {low}; layers count from 0 (the inputs)')
    depth = high + 1
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
    PyG left it in: compare these, not ``g.activation``.

    Raises:
        ValueError: no ``activation``, or one that is not a string or a
            sequence of strings.
    """
    act = g._store._mapping.get('activation')
    if isinstance(g, Batch):
        if isinstance(act, str):
            return [act] * g.num_graphs
        if isinstance(act, (tuple, list)):
            if act and isinstance(act[0], (str, tuple)) and act.count(act[0]) == len(act):
                return [act[0]] * len(act)        # one activation: one C-level scan
            return [a if isinstance(a, str) else _as_names(a) for a in act]
    elif isinstance(act, str):
        return [act]
    elif isinstance(act, (tuple, list)):
        return [tuple(act)]
    raise ValueError(f'activation must be a string or one string per layer, got {act!r}')


def _as_names(act) -> Tuple[str, ...]:
    if not isinstance(act, (tuple, list)):
        raise ValueError(f'activation must be a string or one string per layer, got {act!r}')
    return tuple(act)


def validate(g: Graph) -> List[Tuple[int, ...]]:
    """Checks that a graph or batch is a parameter graph in canonical order:
    ``layer_sizes`` agrees with the ``layer`` tensor and ``edge_index`` holds
    exactly the canonical edges of those sizes. Returns :func:`architecture`.

    O(N + E): called where a graph enters from outside (:func:`to_weights`
    and so :func:`to_state_dict` and :func:`to_module`, :func:`to_networkx`,
    weight matching, MixUp's partner pool, the GNN encoder), not per sample
    on the augmentation path, which checks only tensor sizes (:func:`architecture`).

    Raises:
        ValueError: naming the first mismatch (which graph, which field, layer
            or edge): missing tensors, wrong dtypes or dimensions, sizes or
            edges that disagree with ``layer_sizes``.
    """
    _check_tensors(g._store._mapping)
    per_graph = architecture(g)
    device = g.edge_index.device
    node_ptr = [0]
    for s in per_graph:
        node_ptr.append(node_ptr[-1] + _totals(s)[0])
    if getattr(g, 'layer', None) is not None:
        if len(set(per_graph)) == 1:
            expect_layer = structure_on(per_graph[0], device)[1].repeat(len(per_graph))
        else:
            expect_layer = torch.cat([structure_on(s, device)[1] for s in per_graph])
        if not torch.equal(g.layer, expect_layer):
            i = _first_graph_differing(g.layer != expect_layer, node_ptr)
            own = g.layer[node_ptr[i]:node_ptr[i + 1]]
            got = tuple(torch.bincount(own).tolist()) if int(own.min()) >= 0 else f'layer index {int(own.min())}'
            raise ValueError(f'graph {i}: layer_sizes say {per_graph[i]} but the layer tensor '
                             f'holds {got} (neurons per layer, in canonical order)')
    if len(per_graph) == 1:
        expect_ei = structure_on(per_graph[0], device)[0]
    elif len(set(per_graph)) == 1:     # one architecture: one broadcast, no per-graph list
        offsets = torch.tensor(node_ptr[:-1], device=device)
        canon = structure_on(per_graph[0], device)[0]                          # [2, E]
        expect_ei = (canon.unsqueeze(1) + offsets.view(1, -1, 1)).reshape(2, -1)
    else:
        offsets = torch.tensor(node_ptr[:-1], device=device)
        edge_counts = torch.tensor([_totals(s)[1] for s in per_graph], device=device)
        expect_ei = torch.cat([structure_on(s, device)[0] for s in per_graph], dim=1)
        expect_ei = expect_ei + offsets.repeat_interleave(edge_counts)
    if not torch.equal(g.edge_index, expect_ei):
        e = int((g.edge_index != expect_ei).any(0).nonzero()[0])
        u, v = g.edge_index[:, e].tolist()
        eu, ev = expect_ei[:, e].tolist()
        raise ValueError(f'edge_index disagrees with layer_sizes {sorted(set(per_graph))}: edge {e} '
                         f'is {u} -> {v}, the canonical order has {eu} -> {ev} (edges must be '
                         f'the dense layers, layer by layer, row-major over W_l)')
    return per_graph


def _check_tensors(fields: dict) -> None:
    """The tensors of a parameter graph exist and have its dtypes and dimensions
    (O(1)): a hand-made or corrupt graph is refused here, by name, rather than
    deep inside a view or a matmul."""
    for key in ('x', 'edge_index', 'edge_attr'):
        if not isinstance(fields.get(key), Tensor):
            held = 'nothing' if fields.get(key) is None else f'a {type(fields[key]).__name__}'
            raise ValueError(f'not a parameter graph: {key} must be a tensor, it holds {held}')
    x, edge_attr, edge_index = fields['x'], fields['edge_attr'], fields['edge_index']
    for key, t in (('x', x), ('edge_attr', edge_attr)):
        if t.dim() != 2 or not t.is_floating_point():
            raise ValueError(f'{key} must be a 2-D floating point tensor [count, channels], got '
                             f'{t.dtype} of shape {tuple(t.shape)}')
    if x.dtype != edge_attr.dtype:
        raise ValueError(f'x is {x.dtype} but edge_attr is {edge_attr.dtype}; a network\'s weights '
                         f'and biases share one dtype')
    if edge_index.dim() != 2 or edge_index.size(0) != 2 or edge_index.dtype != torch.long:
        raise ValueError(f'edge_index must be a long tensor [2, E], got {edge_index.dtype} of shape '
                         f'{tuple(edge_index.shape)}')
    layer = fields.get('layer')
    if layer is not None:
        if not isinstance(layer, Tensor):
            raise ValueError(f'layer must be a long tensor [N], it holds a {type(layer).__name__}')
        _check_layer(layer)


def _check_layer(layer: Tensor) -> None:
    if layer.dim() != 1 or layer.dtype != torch.long:
        raise ValueError(f'layer must be a long tensor [N], got {layer.dtype} of shape {tuple(layer.shape)}')


def _first_graph_differing(mask: Tensor, ptr: List[int]) -> int:
    first = int(mask.nonzero()[0])
    return next(i for i in range(len(ptr) - 1) if ptr[i] <= first < ptr[i + 1])


def is_uniform(g: Graph) -> bool:
    """Whether every graph in ``g`` has the same layer sizes."""
    sizes = architecture(g)
    return all(s == sizes[0] for s in sizes)


def num_graphs(g: Graph) -> int:
    return g.num_graphs if isinstance(g, Batch) else 1
