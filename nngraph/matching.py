r"""Weight matching: align one network's hidden neurons to another's.

Two networks of one architecture can compute nearly the same function with
their hidden neurons in a different order (and, for odd activations, with
different signs). :func:`align` undoes that: it returns ``other`` with its
hidden neurons permuted (and sign-flipped) so that its parameters lie as close
as possible to ``reference``'s, while it still computes exactly the function
``other`` computes.

The method is weight matching (Ainsworth et al., "Git Re-Basin", 2023): we
maximise :math:`\sum_l \langle \theta^{ref}_l, \pi(\theta^{other})_l \rangle`
(equivalently minimise :math:`\lVert\theta^{ref} - \pi(\theta^{other})\rVert`,
as a permutation keeps norms) by coordinate descent over the hidden layers.
For hidden layer :math:`h` with the other layers' permutations held fixed, the
objective is linear in :math:`P_h`:

.. math::
    S_h = W^{a}_h\,\big(W^{b}_h P_{h-1}^\top\big)^\top + b^a_h {b^b_h}^\top
        + {W^a_{h+1}}^\top P_{h+1} W^b_{h+1},

the similarity of everything that shares :math:`P_h` (incoming weights,
bias, outgoing weights with the next layer's permutation applied), and
:func:`scipy.optimize.linear_sum_assignment` maximises
:math:`\operatorname{tr}(P_h^\top S_h)` exactly. Each step can only raise the
objective; the loop ends when no layer's matching can change any more (a
fixed point: every layer optimal given the others) or after ``max_iter``
sweeps.

Start: one forward pass that matches each hidden layer on what is already
known (incoming weights through the previous layer's matching and the bias;
the outgoing weights only for the last hidden layer, whose outputs are never
permuted). Starting from the identity instead lets the outgoing term of a
still arbitrary next-layer order swamp the two or three incoming weights of
an INR's first layer, and the descent stalls far from a planted
permutation. If this start scores below the identity, the descent starts
from the identity: the aligned distance is never larger than the unaligned.

With ``signs=True`` (odd activations: :math:`\sigma(-z) = -\sigma(z)`) each
hidden neuron may also be negated (incoming weights, bias and outgoing
weights). Pairing reference neuron :math:`i` with other neuron :math:`j` and
sign :math:`s` contributes :math:`s\,S_h[i, j]`, so the best sign of a pair is
:math:`\operatorname{sign}(S_h[i, j])` and the assignment is solved on
:math:`|S_h|`.

Only the weights are read: layer sizes and feature channels must agree,
activations need not (``signs=True`` checks ``other``'s). Layers are found by
their order in the graph (:func:`nngraph.graph.layer_views`), never by
parameter names. Each step is a few matrix products on the whole
layer; there is no loop over neurons. A whole :class:`~torch_geometric.data.Batch`
of pairs is matched with batched matrix products per layer; only the
assignment itself (a C routine) runs once per pair.
"""
from __future__ import annotations

import copy
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torch_geometric.data import Batch, Data

from nngraph import activations as A
from nngraph.graph import (activations, architecture, check_finite, layer_offsets, permute_hidden,
                           rescale_hidden, validate)

__all__ = ['Matching', 'match', 'align', 'distance', 'match_layers', 'apply_matching',
           'match_arrays', 'array_views', 'flat_index', 'permute_flat']

Graph = Union[Data, Batch]


class Matching(NamedTuple):
    """The result of :func:`match`.

    Attributes:
        perms: one long tensor per hidden layer, ``[d_h]`` (or ``[B, d_h]`` for
            a batch): aligned neuron ``i`` is ``other``'s neuron ``perms[h][i]``
            (the convention of :func:`nngraph.graph.permute_hidden`).
        signs: ``None`` without sign matching; else one tensor of ``+1``/``-1``
            per hidden layer, shaped like ``perms``, applied after the
            permutation (:func:`nngraph.graph.rescale_hidden`).
        sweeps: number of sweeps over the hidden layers that ran (the largest
            over the pairs of a batch), the last one changing nothing unless
            ``max_iter`` was reached.
    """

    perms: List[Tensor]
    signs: Optional[List[Tensor]]
    sweeps: int


# --------------------------------------------------------------------------- #
# Core: coordinate descent on stacked numpy arrays [B, ...]
# --------------------------------------------------------------------------- #

def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.cpu().numpy()


# multiply-adds below which a 2-D product is cheaper in numpy than in torch
_SMALL_PRODUCT = 48 ** 3


def _coordinate_descent(
    wa: List[np.ndarray], ba: List[np.ndarray], wb: List[np.ndarray], bb: List[np.ndarray],
    signs: bool, max_iter: int, order: str, generator: Optional[torch.Generator],
) -> Tuple[List[np.ndarray], List[np.ndarray], int]:
    """``wa[l]``/``wb[l]`` are ``[B, d_{l+1}, d_l, C]`` (``B`` may be 1 on the
    reference side and broadcast), ``ba[l]``/``bb[l]`` are ``[B, d_{l+1}, C]``.
    Returns per-hidden-layer ``perms`` and ``signs`` (int arrays ``[B, d]``)."""
    num_hidden = len(wb) - 1
    B = max(wa[0].shape[0], wb[0].shape[0])
    widths = [wb[h].shape[1] for h in range(num_hidden)]
    perms = [np.arange(d)[None] if B == 1 else np.tile(np.arange(d), (B, 1)) for d in widths]
    sgns = [np.ones((B, d), dtype=wb[0].dtype) for d in widths]
    if num_hidden == 0:
        return perms, sgns, 0

    def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # Products go through torch (zero-copy): it obeys torch.set_num_threads
        # (1 in DataLoader workers), where numpy's OpenBLAS would start its own
        # threads and, on a busy machine, run ~10x slower at width 128. Operands
        # are contiguous (made so once, below); a single pair is a 2-D product,
        # in numpy when it is small (cheaper calls, below OpenBLAS's threading).
        if a.shape[0] == 1 and b.shape[0] == 1:
            if a.shape[1] * a.shape[2] * b.shape[2] <= _SMALL_PRODUCT:   # OpenBLAS stays on one thread
                return (a[0] @ b[0])[None]
            return torch.mm(torch.from_numpy(a[0]), torch.from_numpy(b[0])).numpy()[None]
        return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()

    def rows_first(w: np.ndarray) -> np.ndarray:     # [B, m, C, d] -> [B, m*C, d]
        return w.reshape(w.shape[0], -1, w.shape[-1])

    # Reference side, one row per neuron of hidden layer h: incoming weights
    # [B, d_h, d_{h-1} C], outgoing weights [B, d_h, d_{h+1} C].
    wa_in = [np.ascontiguousarray(wa[h]).reshape(wa[h].shape[0], wa[h].shape[1], -1)
             for h in range(num_hidden)]
    wa_out = [np.ascontiguousarray(np.swapaxes(wa[h + 1], 1, 2)).reshape(wa[h + 1].shape[0], widths[h], -1)
              for h in range(num_hidden)]
    # Other side, transposed, with the axis that a neighbouring layer's
    # matching moves first, so that applying it is a gather of rows:
    # incoming [B, d_{h-1}, C, d_h], outgoing [B, d_{h+1}, C, d_h].
    wb_in = [np.ascontiguousarray(wb[h].transpose(0, 2, 3, 1)) for h in range(num_hidden)]
    wb_out = [np.ascontiguousarray(wb[h + 1].transpose(0, 1, 3, 2)) for h in range(num_hidden)]

    # Terms that no permutation touches, computed once: every bias term, the
    # incoming term of the first hidden layer (inputs are never permuted) and
    # the outgoing term of the last one (outputs neither).
    const = []
    for h in range(num_hidden):
        c = mm(np.ascontiguousarray(ba[h]), np.ascontiguousarray(np.swapaxes(bb[h], 1, 2)))  # [B, d, d]
        if h == 0:
            c = c + mm(wa_in[0], rows_first(wb_in[0]))
        if h == num_hidden - 1:
            c = c + mm(wa_out[h], rows_first(wb_out[h]))
        const.append(c)

    def moved(w: np.ndarray, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Rows of ``w [B, m, C, d]`` in the order (and signs) of matching ``p``, ``g``."""
        w = w[:, p[0]] if p.shape[0] == 1 else np.take_along_axis(w, p[:, :, None, None], axis=1)
        if signs:
            w = w * g[:, :, None, None]
        return rows_first(w)

    def similarity(h: int, outgoing: bool = True, idx: Optional[np.ndarray] = None) -> np.ndarray:
        """S_h of every pair, or of the pairs ``idx`` only (late sweeps, when
        most pairs of a batch have converged)."""
        def sub(a: np.ndarray) -> np.ndarray:
            return a if idx is None or a.shape[0] == 1 else a[idx]
        s = sub(const[h])
        if h > 0:   # incoming weights, their columns moved by the previous layer's matching
            s = s + mm(sub(wa_in[h]), moved(sub(wb_in[h]), sub(perms[h - 1]), sub(sgns[h - 1])))
        if outgoing and h < num_hidden - 1:   # outgoing weights, rows moved by the next layer's
            s = s + mm(sub(wa_out[h]), moved(sub(wb_out[h]), sub(perms[h + 1]), sub(sgns[h + 1])))
        n = B if idx is None else len(idx)
        return s if s.shape[0] == n else np.broadcast_to(s, (n,) + s.shape[1:])

    rows = [np.arange(d) for d in widths]

    def solve(h: int, b: int, sim: np.ndarray, score: np.ndarray) -> bool:
        """Best matching of layer h of pair b for its similarity ``sim [d, d]``
        (``score`` is ``|sim|`` with signs); whether the matching changed."""
        _, col = linear_sum_assignment(score, maximize=True)
        if value is not None:
            value[b] += score[rows[h], col].sum()
        changed = not (col == perms[h][b]).all()
        perms[h][b] = col
        if signs:
            new_sign = np.where(sim[rows[h], col] < 0, -1, 1).astype(sgns[h].dtype)
            changed = changed or not (new_sign == sgns[h][b]).all()
            sgns[h][b] = new_sign
        return changed

    def descend(dirty: np.ndarray) -> int:
        """Coordinate descent until no layer of any pair is dirty; sweeps run.

        dirty[b, h]: the similarity of layer h of pair b changed since h was
        last solved. Solving an unchanged similarity again would give the same
        answer, so a pair is done when no layer is dirty: every layer is then
        optimal given the others, a fixed point of the coordinate descent.
        """
        sweeps = 0
        while dirty.any() and sweeps < max_iter:
            sweeps += 1
            if order == 'random':
                layer_order = torch.randperm(num_hidden, generator=generator).tolist()
            else:
                layer_order = range(num_hidden)
            for h in layer_order:
                todo = np.flatnonzero(dirty[:, h])
                if todo.size == 0:
                    continue
                sim = similarity(h, idx=None if todo.size == B else todo)
                score = np.abs(sim) if signs else sim
                for k, b in enumerate(todo):   # the assignment is per pair; all else is batched
                    dirty[b, h] = False
                    if solve(h, b, sim[k], score[k]):
                        dirty[b, max(h - 1, 0):h + 2] = True
                        dirty[b, h] = False
        return sweeps

    # <theta_a, theta_b> before any matching, per pair
    if B == 1:
        identity_objective = np.array([sum(float(np.vdot(wa[l], wb[l])) + float(np.vdot(ba[l], bb[l]))
                                           for l in range(num_hidden + 1))])
    else:
        identity_objective = sum((wa[l] * wb[l]).sum(axis=(1, 2, 3)) + (ba[l] * bb[l]).sum(axis=(1, 2))
                                 for l in range(num_hidden + 1))
    # Start: one forward pass, each hidden layer matched on what is already
    # known (incoming weights through the previous layer's matching, bias, and
    # the outgoing weights only for the last hidden layer, whose outputs are
    # never permuted). From the identity instead, the outgoing term of a still
    # arbitrary next-layer order swamps the few incoming weights of narrow
    # first layers (2-D INRs) and the descent stalls far from a planted
    # permutation. These partial similarities cover every parameter but the
    # output bias exactly once, so the assignments' values add up to the
    # objective of the start.
    value = (ba[num_hidden] * bb[num_hidden]).sum(axis=(1, 2)) + np.zeros(B)
    for h in range(num_hidden):
        sim = similarity(h, outgoing=False)
        score = np.abs(sim) if signs else sim
        for b in range(B):
            solve(h, b, sim[b], score[b])
    # The descent never lowers the objective, so a pair whose start is below
    # the identity's starts from the identity instead: the result is never
    # farther from the reference than unaligned.
    worse = value < identity_objective
    value = None
    if worse.any():
        for h in range(num_hidden):
            perms[h][worse] = np.arange(widths[h])
            sgns[h][worse] = 1
    # After the start only the last hidden layer was solved on its full similarity.
    dirty = np.ones((B, num_hidden), dtype=bool)
    dirty[~worse, num_hidden - 1] = False
    sweeps = descend(dirty)
    return perms, sgns, sweeps


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #

_ORDERS = ('fixed', 'random')


def array_views(edge_attr: np.ndarray, x: np.ndarray, layer_sizes: Sequence[int]
                ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Per-layer numpy views of stacked flat parameters: ``edge_attr [B, E, C]``
    and ``x [B, N, C]`` give ``W_l`` as ``[B, d_{l+1}, d_l, C]`` and ``b_l`` as
    ``[B, d_{l+1}, C]`` (the canonical order of DESIGN.md, no copies)."""
    sizes = tuple(layer_sizes)
    node_off, edge_off = layer_offsets(sizes)
    B = edge_attr.shape[0]
    weights = [edge_attr[:, edge_off[l]:edge_off[l + 1]].reshape(B, sizes[l + 1], sizes[l], -1)
               for l in range(len(sizes) - 1)]
    biases = [x[:, node_off[l + 1]:node_off[l + 2]] for l in range(len(sizes) - 1)]
    return weights, biases


def match_arrays(wa: Sequence[np.ndarray], ba: Sequence[np.ndarray],
                 wb: Sequence[np.ndarray], bb: Sequence[np.ndarray], *, signs: bool = False,
                 max_iter: int = 100, order: str = 'fixed',
                 generator: Optional[torch.Generator] = None,
                 ) -> Tuple[List[np.ndarray], Optional[List[np.ndarray]], int]:
    """The matching core on numpy arrays shaped as :func:`array_views` returns
    them (the reference side may have batch size 1). Returns ``(perms, signs,
    sweeps)`` with ``perms[h]`` an int array ``[B, d_h]`` and ``signs[h]`` a
    ``+1``/``-1`` array (``None`` without sign matching). See :func:`match`."""
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    if max_iter < 1:
        raise ValueError(f'max_iter must be at least 1, got {max_iter}')
    if len(wa) != len(wb):
        raise ValueError(f'reference has {len(wa)} layers but other has {len(wb)}')
    for l, (x, y) in enumerate(zip(wa, wb)):
        if x.shape[1:] != y.shape[1:]:
            raise ValueError(f'layer {l}: reference weight has shape {x.shape[1:3]} with {x.shape[3]} '
                             f'channel(s) but other has {y.shape[1:3]} with {y.shape[3]}')
    if wa[0].shape[0] not in (1, wb[0].shape[0]):
        raise ValueError(f'{wa[0].shape[0]} reference networks cannot be paired with '
                         f'{wb[0].shape[0]} others (give 1 reference or one per other)')
    dtype = np.result_type(wa[0], wb[0])
    if any(x.dtype != dtype for xs in (wa, ba, wb, bb) for x in xs):
        wa, ba, wb, bb = ([x.astype(dtype, copy=False) for x in xs] for xs in (wa, ba, wb, bb))
    perms, sgns, sweeps = _coordinate_descent(wa, ba, wb, bb, signs, max_iter, order, generator)
    return perms, (sgns if signs else None), sweeps


def flat_index(layer_sizes: Sequence[int], perms: Sequence[np.ndarray],
               signs: Optional[Sequence[np.ndarray]] = None):
    """A matching as one gather over a whole graph's flat parameters.

    Returns ``(edge_index, edge_sign, node_index, node_sign)``, ``[B, E]`` and
    ``[B, N]`` numpy arrays (signs ``None`` without sign matching), such that
    the matched network has ``edge_attr[b] = edge_attr_other[b][edge_index[b]]
    * edge_sign[b]`` and likewise for ``x``: weight ``(i, j)`` of layer ``l``
    comes from ``(perms[l][i], perms[l-1][j])``, the identity for the input
    and output layers.
    """
    sizes = tuple(layer_sizes)
    node_off, edge_off = layer_offsets(sizes)
    B = perms[0].shape[0] if perms else 1
    ends = [np.arange(sizes[0])[None], np.arange(sizes[-1])[None]]
    if B > 1:
        ends = [np.tile(e, (B, 1)) for e in ends]
    full = [ends[0]] + list(perms) + [ends[1]]
    edge_idx = np.concatenate(
        [(edge_off[l] + full[l + 1][:, :, None] * sizes[l] + full[l][:, None, :]).reshape(B, -1)
         for l in range(len(sizes) - 1)], axis=1)
    node_idx = np.concatenate([node_off[l] + full[l] for l in range(len(sizes))], axis=1)
    if signs is None:
        return edge_idx, None, node_idx, None
    dtype = signs[0].dtype if signs else np.float32
    sfull = [np.ones((B, sizes[0]), dtype)] + list(signs) + [np.ones((B, sizes[-1]), dtype)]
    edge_sign = np.concatenate([(sfull[l + 1][:, :, None] * sfull[l][:, None, :]).reshape(B, -1)
                                for l in range(len(sizes) - 1)], axis=1)
    return edge_idx, edge_sign, node_idx, np.concatenate(sfull, axis=1)


def _gather(t: Tensor, index: np.ndarray, sign: Optional[np.ndarray]) -> Tensor:
    """``t [B, M, C]`` gathered along ``M`` by ``index [B, M]``, times ``sign``."""
    if (t.device.type == 'cpu' and t.shape[0] == 1 and not t.requires_grad
            and t.dtype in (torch.float32, torch.float64)):
        # one pair on the CPU: numpy's fancy indexing costs a fraction of torch's dispatch
        out = t.detach()[0].numpy()[index[0]]
        if sign is not None:
            out *= sign[0, :, None].astype(out.dtype, copy=False)
        return torch.from_numpy(out).unsqueeze(0)
    idx = torch.from_numpy(index).to(t.device)
    if t.shape[0] == 1:
        out = t[0].index_select(0, idx[0]).unsqueeze(0)
    else:
        out = torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
    if sign is not None:
        out = out * torch.from_numpy(sign).to(device=t.device, dtype=t.dtype).unsqueeze(-1)
    return out


def permute_flat(edge_attr: Tensor, x: Tensor, layer_sizes: Sequence[int],
                 perms: Sequence[np.ndarray], signs: Optional[Sequence[np.ndarray]] = None
                 ) -> Tuple[Tensor, Tensor]:
    """Applies a matching (numpy ``perms``/``signs`` ``[B, d_h]``) to stacked
    flat parameters ``edge_attr [B, E, C]`` and ``x [B, N, C]``: one gather
    for all layers (:func:`flat_index`). Returns new tensors."""
    e_idx, e_sign, n_idx, n_sign = flat_index(layer_sizes, perms, signs)
    return _gather(edge_attr, e_idx, e_sign), _gather(x, n_idx, n_sign)


def match_layers(
    ref_weights: Sequence[Tensor], ref_biases: Sequence[Tensor],
    other_weights: Sequence[Tensor], other_biases: Sequence[Tensor],
    *, signs: bool = False, max_iter: int = 100, order: str = 'fixed',
    generator: Optional[torch.Generator] = None,
) -> Matching:
    """:func:`match` on per-layer views instead of graphs.

    Takes the views of :func:`nngraph.graph.layer_views` (``W_l`` as
    ``[d_{l+1}, d_l, C]``, ``b_l`` as ``[d_{l+1}, C]``) or of
    :func:`nngraph.graph.stacked_layer_views` (a leading batch dim; the
    reference side may be a single graph's views, shared by every ``other``).
    No activation check: the caller decides whether sign flips are valid.
    """
    for name, ws, bs in (('reference', ref_weights, ref_biases), ('other', other_weights, other_biases)):
        if ws[0].dim() not in (3, 4) or any(w.dim() != ws[0].dim() for w in ws) or \
                any(b.dim() != ws[0].dim() - 1 for b in bs):
            raise ValueError(f'{name} views must be W [d_out, d_in, C] and b [d_out, C] per layer, '
                             f'or stacked with a leading batch dim; got weight shapes '
                             f'{[tuple(w.shape) for w in ws]}, bias shapes {[tuple(b.shape) for b in bs]}')
    stacked = other_weights[0].dim() == 4
    # A single graph's views get a batch dim of 1 (a single reference is then
    # shared by every network of a stacked ``other``).
    wa = [_to_numpy(w) if w.dim() == 4 else _to_numpy(w)[None] for w in ref_weights]
    ba = [_to_numpy(b) if b.dim() == 3 else _to_numpy(b)[None] for b in ref_biases]
    wb = [_to_numpy(w) if stacked else _to_numpy(w)[None] for w in other_weights]
    bb = [_to_numpy(b) if stacked else _to_numpy(b)[None] for b in other_biases]
    perms, sgns, sweeps = match_arrays(wa, ba, wb, bb, signs=signs, max_iter=max_iter,
                                       order=order, generator=generator)
    return _to_matching(perms, sgns, sweeps, stacked, other_weights[0])


def _to_matching(perms, sgns, sweeps, stacked: bool, like: Tensor) -> Matching:
    out_perms = [torch.from_numpy(p if stacked else p[0]).to(like.device) for p in perms]
    out_signs = (None if sgns is None else
                 [torch.from_numpy(g if stacked else g[0]).to(device=like.device, dtype=like.dtype)
                  for g in sgns])
    return Matching(out_perms, out_signs, sweeps)


def apply_matching(weights: Sequence[Tensor], biases: Sequence[Tensor],
                   matching: Matching) -> Tuple[List[Tensor], List[Tensor]]:
    """Applies a :class:`Matching` to per-layer views (single or stacked):
    the permutations, then the signs. Returns new tensors."""
    weights, biases = permute_hidden(weights, biases, matching.perms)
    if matching.signs is not None:
        weights, biases = rescale_hidden(weights, biases, matching.signs)
    return weights, biases


def _check_finite(g: Graph, where: str) -> None:
    """:func:`nngraph.graph.check_finite`, its message prefixed by ``where``."""
    try:
        check_finite(g)
    except ValueError as err:
        raise ValueError(f'{where}: {err}') from None


def _check_pair(reference: Graph, other: Graph, signs: bool, caller: str) -> None:
    for name, g in (('reference', reference), ('other', other)):
        if not isinstance(g, (Data, Batch)):
            raise TypeError(f'{caller}: {name} must be a torch_geometric Data or Batch, '
                            f'got {type(g).__name__}')
    if isinstance(reference, Batch) and not isinstance(other, Batch):
        raise TypeError(f'{caller}: a Batch reference needs a Batch other')
    arch_a, arch_b = validate(reference), validate(other)
    if len(set(arch_b)) > 1 or len(set(arch_a)) > 1:
        raise ValueError(f'{caller}: a batch must hold one architecture, got '
                         f'{sorted(set(arch_a) | set(arch_b))}')
    if arch_a[0] != arch_b[0]:
        raise ValueError(f'{caller} needs networks of one architecture: reference has layer sizes '
                         f'{arch_a[0]}, other has {arch_b[0]}')
    if len(arch_a) not in (1, len(arch_b)):
        raise ValueError(f'{caller}: {len(arch_a)} reference networks cannot be paired with '
                         f'{len(arch_b)} others (give 1 reference or one per other)')
    for attr in ('edge_attr', 'x'):
        ca, cb = getattr(reference, attr).size(-1), getattr(other, attr).size(-1)
        if ca != cb:
            raise ValueError(f'{caller}: reference has {ca} {attr} channel(s), other has {cb}')
    # before scipy's assignment raises 'matrix contains invalid numeric entries'
    # about no graph in particular
    for name, g in (('reference', reference), ('other', other)):
        _check_finite(g, f'{caller}: {name}')
    if signs:
        for act in set(activations(other)):
            A.require(act, len(arch_b[0]) - 1, 'odd', f'{caller}(signs=True)')


def _flat(g: Graph) -> Tuple[Tensor, Tensor]:
    """``edge_attr [B, E, C]`` and ``x [B, N, C]`` of a graph (B = 1) or a uniform batch."""
    B = g.num_graphs if isinstance(g, Batch) else 1
    return g.edge_attr.reshape(B, -1, g.edge_attr.size(-1)), g.x.reshape(B, -1, g.x.size(-1))


def _match_graphs(reference: Graph, other: Graph, signs: bool, max_iter: int, order: str,
                  generator: Optional[torch.Generator]):
    _check_pair(reference, other, signs, 'align')
    sizes = architecture(other)[0]
    (ea_a, x_a), (ea_b, x_b) = _flat(reference), _flat(other)
    wa, ba = array_views(_to_numpy(ea_a), _to_numpy(x_a), sizes)
    wb, bb = array_views(_to_numpy(ea_b), _to_numpy(x_b), sizes)
    perms, sgns, sweeps = match_arrays(wa, ba, wb, bb, signs=signs, max_iter=max_iter,
                                       order=order, generator=generator)
    return sizes, ea_b, x_b, perms, sgns, sweeps


def match(reference: Graph, other: Graph, *, signs: bool = False, max_iter: int = 100,
          order: str = 'fixed', generator: Optional[torch.Generator] = None) -> Matching:
    r"""Finds the hidden-neuron permutations (and signs) that bring ``other``
    closest to ``reference`` by weight matching (see the module docstring).

    Args:
        reference: the graph to align to; or a :class:`~torch_geometric.data.Batch`
            of one architecture, one reference per ``other`` (or a single one).
        other: the graph to permute, or a Batch of ``B`` of them.
        signs: also match signs (each pair's sign is that of its similarity,
            the assignment runs on :math:`|S_h|`); only for odd hidden
            activations (sine, tanh).
        max_iter: most sweeps over the hidden layers.
        order: ``'fixed'`` visits hidden layers first to last in every sweep
            (deterministic, draws no random numbers); ``'random'`` visits them
            in a fresh random order per sweep (Git Re-Basin's choice; draws
            from ``generator`` or torch's global RNG).
        generator: optional generator for ``order='random'``.

    Returns:
        A :class:`Matching`: ``perms`` (and ``signs``) per hidden layer,
        ``[d_h]`` for graphs, ``[B, d_h]`` for batches.

    Raises:
        ValueError: different layer sizes or feature channels, a bad ``order``,
            or ``signs=True`` for an activation that is not odd (the error names
            the activation).
        TypeError: inputs that are not graphs.
    """
    _, ea_b, _, perms, sgns, sweeps = _match_graphs(reference, other, signs, max_iter, order, generator)
    return _to_matching(perms, sgns, sweeps, isinstance(other, Batch), ea_b)


def align(reference: Graph, other: Graph, *, signs: bool = False, max_iter: int = 100,
          order: str = 'fixed', generator: Optional[torch.Generator] = None,
          return_perms: bool = False) -> Union[Graph, Tuple[Graph, Matching]]:
    r"""``other`` with its hidden neurons permuted (and, with ``signs=True``,
    sign-flipped) to best match ``reference``; it computes exactly the function
    ``other`` computes.

    Arguments are those of :func:`match`; with ``return_perms=True`` the
    :class:`Matching` is returned too, as ``(aligned, matching)``. Works on one
    pair of graphs or on a Batch of pairs (``other`` a Batch of one
    architecture, ``reference`` a Batch of the same size or a single graph);
    the batch is matched with batched matrix products, one assignment per pair.
    Neither input is modified.
    """
    sizes, ea_b, x_b, perms, sgns, sweeps = _match_graphs(reference, other, signs, max_iter,
                                                          order, generator)
    ea, x = permute_flat(ea_b, x_b, sizes, perms, sgns)
    aligned = copy.copy(other)
    aligned.edge_attr = ea.reshape(other.edge_attr.shape)
    aligned.x = x.reshape(other.x.shape)
    if return_perms:
        return aligned, _to_matching(perms, sgns, sweeps, isinstance(other, Batch), ea_b)
    return aligned


def distance(a: Graph, b: Graph) -> Tensor:
    r"""Euclidean distance :math:`\lVert\theta_a - \theta_b\rVert_2` between
    the parameters (all weights and biases) of two graphs of one architecture:
    a scalar for two graphs, ``[B]`` for two uniform batches of ``B``."""
    arch_a, arch_b = validate(a), validate(b)
    if arch_a != arch_b:
        raise ValueError(f'distance needs graphs of one architecture, got layer sizes '
                         f'{sorted(set(arch_a))} and {sorted(set(arch_b))}')
    if a.edge_attr.shape != b.edge_attr.shape or a.x.shape != b.x.shape:
        raise ValueError(f'distance needs graphs of one architecture: edge_attr {tuple(a.edge_attr.shape)} '
                         f'vs {tuple(b.edge_attr.shape)}, x {tuple(a.x.shape)} vs {tuple(b.x.shape)}')
    _check_finite(a, 'distance: a')
    _check_finite(b, 'distance: b')
    if isinstance(a, Batch):
        B = a.num_graphs
        de = (a.edge_attr - b.edge_attr).reshape(B, -1)
        dx = (a.x - b.x).reshape(B, -1)
        return (de.pow(2).sum(1) + dx.pow(2).sum(1)).sqrt()
    return ((a.edge_attr - b.edge_attr).pow(2).sum() + (a.x - b.x).pow(2).sum()).sqrt()
