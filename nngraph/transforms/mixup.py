"""MixUp in weight space: interpolate a network with a partner of its architecture."""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch, Data, Dataset
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from nngraph import activations as A
from nngraph.graph import activations, architecture, layer_offsets, validate
from nngraph.matching import array_views, match_arrays, permute_flat
from nngraph.transforms._base import mark_screened, require_finite, require_finite_labels, require_finite_number

__all__ = ['WeightMixUp', 'sample_lam', 'soft_label', 'random_flat_index', 'aligned_flat',
           'mix_flat', 'batch_architecture']

_MODES = ('vanilla', 'permute', 'align')


def sample_lam(alpha: Optional[float], shape: Tuple[int, ...] = (), *, device=None) -> Tensor:
    r"""Mixing coefficients :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`,
    or :math:`\mathcal{U}(0, 1)` for ``alpha=None``, from torch's global RNG."""
    if alpha is None:
        return torch.rand(shape, device=device)
    return _Beta(alpha).sample(shape, device)


class _Beta:
    r"""Draws :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` as
    :math:`G_1 / (G_1 + G_2)` with :math:`G_i \sim \Gamma(\alpha, 1)`, from
    torch's global RNG (``torch.distributions.Beta`` goes through a Dirichlet
    with autograd bookkeeping and costs several times more per draw)."""

    def __init__(self, alpha: float) -> None:
        # Beta(inf, inf) draws inf / (inf + inf) = NaN; a tiny alpha is fine
        # (torch's gamma sampler returns at least the smallest normal float)
        self.alpha = require_finite_number(alpha, 'alpha', 'MixUp')
        if not self.alpha > 0:
            raise ValueError(f'MixUp: alpha must be positive, got {alpha}')
        self._conc: Dict[Tuple[Tuple[int, ...], torch.device], Tensor] = {}

    def sample(self, shape: Tuple[int, ...] = (), device=None) -> Tensor:
        key = (tuple(shape), torch.device(device or 'cpu'))
        conc = self._conc.get(key)
        if conc is None:
            conc = self._conc[key] = torch.full((2,) + key[0], self.alpha, device=key[1])
        # the sampler behind torch.distributions.Gamma, without its per-call wrapping
        g = torch._standard_gamma(conc)
        return g[0] / (g[0] + g[1])


def _beta(alpha: Optional[float]) -> Optional[_Beta]:
    return None if alpha is None else _Beta(alpha)


def soft_label(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """A label as a float ``[n, K]`` row per graph: a hard label (long ``[n]``
    or a scalar) is one-hot encoded, a soft label ``[n, K]`` or ``[K]`` is kept.

    Raises:
        ValueError: a class outside ``[0, K)`` or a soft label of another width.
    """
    if y.is_floating_point():
        y = y.reshape(-1, y.shape[-1]) if y.dim() > 0 else y.reshape(1, 1)
        if y.shape[-1] != num_classes:
            raise ValueError(f'soft label has {y.shape[-1]} classes but num_classes is {num_classes}')
        return y.to(dtype)
    if y.numel() == 1:   # the common case, one graph's class: a row of a cached identity
        c = int(y)
        if not 0 <= c < num_classes:
            raise ValueError(f'label {c} is outside [0, {num_classes}); pass num_classes')
        return _eye(num_classes, dtype, y.device)[c:c + 1].clone()
    y = y.reshape(-1).long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f'label {y.tolist()} is outside [0, {num_classes}); pass num_classes')
    return F.one_hot(y, num_classes).to(dtype)


@functools.lru_cache(maxsize=32)
def _eye(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.eye(n, dtype=dtype, device=device)


def _arch_key(g: Data) -> tuple:
    """What a partner must share with the sample: layer sizes, activation,
    feature channels and dtype."""
    ea, x = g.edge_attr, g.x
    return _key(architecture(g)[0], activations(g)[0], ea.size(-1), x.size(-1), ea.dtype)


@functools.lru_cache(maxsize=256)
def _key(sizes: Tuple[int, ...], act, c_edge: int, c_node: int, dtype: torch.dtype) -> tuple:
    return (sizes, A.compact(A.per_layer(act, len(sizes) - 1)), c_edge, c_node, dtype)


def _describe(key: tuple) -> str:
    return f'layer sizes {key[0]}, activation {key[1]!r}'


def _items(source) -> List[Data]:
    """The graphs of ``source`` without its transform (a dataset whose
    transform is this very MixUp must not call itself back)."""
    if isinstance(source, Dataset):
        return [source.get(i) for i in source.indices()]
    if isinstance(source, Data):
        return [source]
    return list(source)


class _PartnerBank:
    """The source graphs stacked per architecture: ``edge_attr [n, E, C]``,
    ``x [n, N, C]`` and soft labels ``[n, K]``, so drawing partners is one
    ``index_select`` for a single graph or a whole batch."""

    def __init__(self, source, num_classes: Optional[int], caller: str) -> None:
        graphs = _items(source)
        if not graphs:
            raise ValueError(f'{caller}: source holds no graphs')
        for i, g in enumerate(graphs):
            if not isinstance(g, Data) or isinstance(g, Batch) or getattr(g, 'layer', None) is None:
                raise TypeError(f'{caller}: source item {i} is not a parameter graph '
                                f'(a Data with layer and layer_sizes), got {type(g).__name__}')
            try:
                validate(g)
            except ValueError as e:
                raise ValueError(f'{caller}: source item {i}: {e}') from None
            # a NaN partner would make every sample mixed with it NaN
            require_finite(g, f'{caller}: source item {i}')
            require_finite_labels(getattr(g, 'y', None), f'{caller}: source item {i}')
        labels = [getattr(g, 'y', None) for g in graphs]
        if num_classes is None and all(y is not None for y in labels):
            widths = [int(y.shape[-1]) if y.is_floating_point() else int(y.max()) + 1 for y in labels]
            num_classes = max(widths)
        self.num_classes = num_classes
        groups: Dict[tuple, List[Data]] = {}
        for g in graphs:
            groups.setdefault(_arch_key(g), []).append(g)
        self.groups: Dict[tuple, Tuple[Tensor, Tensor, Optional[Tensor]]] = {}
        for key, gs in groups.items():
            ea = torch.stack([g.edge_attr for g in gs])
            x = torch.stack([g.x for g in gs])
            ys = [getattr(g, 'y', None) for g in gs]
            y = (torch.cat([soft_label(v, num_classes, torch.get_default_dtype()) for v in ys])
                 if num_classes is not None and all(v is not None for v in ys) else None)
            self.groups[key] = (ea, x, y)
        self.caller = caller
        self._on_device: Dict[Tuple[tuple, torch.device], Tuple[Tensor, Tensor, Optional[Tensor]]] = {}

    def get(self, key: tuple, device: torch.device) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        hit = self._on_device.get((key, device))
        if hit is not None:
            return hit
        if key not in self.groups:
            have = '; '.join(_describe(k) for k in self.groups)
            raise ValueError(f'{self.caller}: no graph in source has the architecture of the sample '
                             f'({_describe(key)}, {key[2]} edge / {key[3]} node channel(s), '
                             f'{key[4]}); source has: {have}')
        ea, x, y = self.groups[key]
        hit = (ea.to(device), x.to(device), None if y is None else y.to(device))
        self._on_device[(key, device)] = hit
        return hit


def _gather(t: Tensor, index: Tensor, sign: Optional[Tensor] = None) -> Tensor:
    """``t [B, M, C]`` gathered along ``M`` by ``index [B, M]``, times ``sign [B, M]``."""
    out = torch.gather(t, 1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
    return out if sign is None else out * sign.unsqueeze(-1).to(t.dtype)


def random_flat_index(layer_sizes: Sequence[int], batch: int, device=None, signs: bool = False):
    """A uniform random permutation of every hidden layer (and, with
    ``signs``, uniform random signs), as one gather over flat parameters:
    ``(edge_index [B, E], edge_sign, node_index [B, N], node_sign)`` torch
    tensors on ``device`` (signs ``None`` unless asked for), the layout of
    :func:`nngraph.matching.flat_index`. Permutations are argsorts of uniform
    noise (one op for the whole batch); draws from torch's global RNG."""
    sizes = tuple(layer_sizes)
    node_off, edge_off = layer_offsets(sizes)
    B = batch
    ends = [torch.arange(sizes[0], device=device).expand(B, -1)]
    hidden = [torch.rand(B, d, device=device).argsort(dim=1) for d in sizes[1:-1]]
    full = ends + hidden + [torch.arange(sizes[-1], device=device).expand(B, -1)]
    e_idx = torch.cat([(edge_off[l] + full[l + 1][:, :, None] * sizes[l] + full[l][:, None, :]).reshape(B, -1)
                       for l in range(len(sizes) - 1)], dim=1)
    n_idx = torch.cat([node_off[l] + full[l] for l in range(len(sizes))], dim=1)
    if not signs:
        return e_idx, None, n_idx, None
    flips = [torch.randint(0, 2, (B, d), device=device) * 2 - 1 for d in sizes[1:-1]]
    sfull = ([torch.ones(B, sizes[0], dtype=torch.long, device=device)] + flips
             + [torch.ones(B, sizes[-1], dtype=torch.long, device=device)])
    e_sign = torch.cat([(sfull[l + 1][:, :, None] * sfull[l][:, None, :]).reshape(B, -1)
                        for l in range(len(sizes) - 1)], dim=1)
    return e_idx, e_sign, n_idx, torch.cat(sfull, dim=1)


def aligned_flat(ea_ref: Tensor, x_ref: Tensor, ea: Tensor, x: Tensor, layer_sizes: Sequence[int],
                 signs: bool, max_iter: int) -> Tuple[Tensor, Tensor]:
    """``ea [B, E, C]``, ``x [B, N, C]`` aligned to the references (same
    shapes, or batch 1) by :func:`nngraph.matching.match_arrays`; numpy on
    the CPU, one assignment per pair and hidden layer."""
    def np_(t: Tensor) -> np.ndarray:
        t = t.detach()
        return (t if t.dtype in (torch.float32, torch.float64) else t.float()).cpu().numpy()
    wa, ba = array_views(np_(ea_ref), np_(x_ref), layer_sizes)
    wb, bb = array_views(np_(ea), np_(x), layer_sizes)
    perms, sgns, _ = match_arrays(wa, ba, wb, bb, signs=signs, max_iter=max_iter)
    return permute_flat(ea, x, layer_sizes, perms, sgns)


def mix_flat(lam: Tensor, ea_a: Tensor, x_a: Tensor, ea_b: Tensor, x_b: Tensor,
             num_inputs: int) -> Tuple[Tensor, Tensor]:
    r""":math:`\lambda a + (1 - \lambda) b` of stacked flat parameters
    (``[B, E, C]``, ``[B, N, C]``, ``lam [B]``), keeping ``a``'s input-node
    rows. ``torch.lerp`` returns ``a`` exactly at :math:`\lambda = 1` and
    ``b`` exactly at 0."""
    lm = lam.to(ea_a.dtype).view(-1, 1, 1)
    ea = torch.lerp(ea_b, ea_a, lm)
    x = torch.cat([x_a[:, :num_inputs], torch.lerp(x_b[:, num_inputs:], x_a[:, num_inputs:], lm)], dim=1)
    return ea, x


def batch_architecture(batch: Batch, caller: str) -> Tuple[Tuple[int, ...], object]:
    """``(layer_sizes, activation)`` shared by every graph of ``batch``, or a
    ``ValueError`` naming ``caller``."""
    sizes, acts = architecture(batch), activations(batch)
    if any(s != sizes[0] for s in sizes) or any(a != acts[0] for a in acts):
        raise ValueError(f'{caller}: the batch path needs one architecture, got layer sizes '
                         f'{sorted(set(sizes))} and activations {sorted(set(map(str, acts)))}')
    return sizes[0], acts[0]


@functional_transform('weight_mixup')
class WeightMixUp(BaseTransform):
    r"""MixUp in weight space (Shamsian et al., ICML 2024): the sample's
    parameters and label are interpolated with those of a random partner of
    the same architecture drawn from ``source``,

    .. math::
        \theta = \lambda\,\theta_{\text{sample}} + (1 - \lambda)\,\pi(\theta_{\text{partner}}),
        \qquad y = \lambda\,y_{\text{sample}} + (1 - \lambda)\,y_{\text{partner}},

    with :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` and :math:`\pi`
    the identity (``mode='vanilla'``), a uniform random permutation of every
    hidden layer (``'permute'``) or the weight-matching alignment of the
    partner to the sample (``'align'``, :func:`nngraph.matching.align`; with
    ``signs=True`` up to permutation and sign). Labels become soft: a float
    ``y`` of shape ``[1, K]`` summing to 1 (hard labels are one-hot encoded).

    For a :class:`~torch_geometric.data.Batch` of one architecture every graph
    is mixed with its own partner drawn from ``source`` (not from within the
    batch, so the batch path has the per-sample distribution) in one tensor
    op per layer; ``'align'`` matches all pairs with batched matrix products
    and one assignment per pair and layer (the assignment has no batched
    solver). Randomness comes from torch's global RNG: partner index, then
    :math:`\lambda`, then the permutations.

    Valid for: any activation (``signs=True``: odd activations only).
    Preserves: nothing exactly; an interpolation of two networks and labels.

    Args:
        source: a dataset (read without its transform) or a list of graphs
            to draw partners from. Graphs of other architectures than the
            sample's are skipped; a sample whose architecture no source graph
            has raises ``ValueError``. The source is stacked into one tensor per
            architecture once, at construction (a copy in memory).
        mode (str): ``'vanilla'``, ``'permute'`` or ``'align'``.
        alpha (float, optional): Beta concentration; ``None`` draws
            :math:`\lambda` from :math:`\mathcal{U}(0, 1)`.
        signs (bool): with ``mode='align'``, also match hidden-neuron signs.
        num_classes (int, optional): ``K`` for one-hot encoding hard labels;
            inferred from the source's labels when not given.
        lam (float, optional): a fixed :math:`\lambda` instead of a random
            one (``lam=1`` returns the sample, with a soft label).
        max_iter (int): most weight-matching sweeps for ``mode='align'``.
    """

    def __init__(self, source, mode: str = 'vanilla', alpha: Optional[float] = None, *,
                 signs: bool = False, num_classes: Optional[int] = None,
                 lam: Optional[float] = None, max_iter: int = 100) -> None:
        if mode not in _MODES:
            raise ValueError(f"WeightMixUp: mode must be one of {_MODES}, got {mode!r}")
        if alpha is not None and not 0 < alpha < float('inf'):
            raise ValueError(f'WeightMixUp: alpha must be positive and finite, or None, got {alpha}')
        if lam is not None and not 0.0 <= lam <= 1.0:
            raise ValueError(f'WeightMixUp: lam must lie in [0, 1], got {lam}')
        if signs and mode != 'align':
            raise ValueError(f"WeightMixUp: signs=True needs mode='align', got mode={mode!r}")
        self.mode, self.alpha, self.signs, self.lam, self.max_iter = mode, alpha, signs, lam, max_iter
        self._beta = _beta(alpha)
        self.bank = _PartnerBank(source, num_classes, 'WeightMixUp')
        self.num_classes = self.bank.num_classes

    def _lam(self, shape: Tuple[int, ...], device) -> Tensor:
        if self.lam is not None:
            return torch.full(shape, float(self.lam), device=device)
        if self._beta is None:
            return torch.rand(shape, device=device)
        return self._beta.sample(shape, device)

    def _check_signs(self, key: tuple) -> None:
        if self.signs:
            A.require(key[1], len(key[0]) - 1, 'odd', 'WeightMixUp(signs=True)')

    def _labels(self, y: Optional[Tensor], y_partner: Optional[Tensor], lam: Tensor) -> Optional[Tensor]:
        if y is None:
            return None
        if self.num_classes is None or y_partner is None:
            raise ValueError('WeightMixUp: the sample has a label but the source graphs do not '
                             '(or num_classes is unknown); give labelled graphs or num_classes')
        dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
        ys = soft_label(y, self.num_classes, dtype)                      # [n, K]
        lm = lam.to(dtype).reshape(-1, 1)
        return torch.lerp(y_partner.to(dtype), ys, lm)

    def _partner(self, ea_s: Tensor, x_s: Tensor, ea_p: Tensor, x_p: Tensor,
                 sizes: Tuple[int, ...]) -> Tuple[Tensor, Tensor]:
        if self.mode == 'permute':
            e_idx, _, n_idx, _ = random_flat_index(sizes, ea_p.shape[0], ea_p.device)
            return _gather(ea_p, e_idx), _gather(x_p, n_idx)
        if self.mode == 'align':
            return aligned_flat(ea_s, x_s, ea_p, x_p, sizes, self.signs, self.max_iter)
        return ea_p, x_p

    def _mix(self, data, key: tuple, B: int):
        """Shared by both paths: ``data``'s flat parameters are ``[B, E, C]``."""
        self._check_signs(key)
        sizes, device = key[0], data.edge_attr.device
        ea_bank, x_bank, y_bank = self.bank.get(key, device)
        if B == 1:   # a slice is a view; indexing with a tensor would copy
            i = int(torch.randint(ea_bank.shape[0], (1,)))
            idx = slice(i, i + 1)
        else:
            idx = torch.randint(ea_bank.shape[0], (B,)).to(device)
        lam = self._lam((B,), device)
        ea_in, x_in = data.edge_attr, data.x
        ea_s = ea_in.reshape(B, -1, ea_in.size(-1))
        x_s = x_in.reshape(B, -1, x_in.size(-1))
        ea_p, x_p = self._partner(ea_s, x_s, ea_bank[idx], x_bank[idx], sizes)
        ea, x = mix_flat(lam, ea_s, x_s, ea_p, x_p, sizes[0])
        y = self._labels(getattr(data, 'y', None), None if y_bank is None else y_bank[idx], lam)
        # ``data`` is already BaseTransform's shallow copy: assign new tensors to it
        data.edge_attr, data.x = ea.view(ea_in.shape), x.view(x_in.shape)
        if y is not None:
            data.y = y
        return data

    def forward(self, data: Data) -> Data:
        require_finite(data, 'WeightMixUp', labels=True)
        if isinstance(data, Batch):
            sizes, act = batch_architecture(data, 'WeightMixUp')
            ea, x = data.edge_attr, data.x
            out = self._mix(data, _key(sizes, act, ea.size(-1), x.size(-1), ea.dtype), data.num_graphs)
        else:
            out = self._mix(data, _arch_key(data), 1)
        return mark_screened(out)   # a finite input mixed with a finite partner (checked in the pool)

    def __repr__(self) -> str:
        extra = ', signs=True' if self.signs else ''
        extra += f', lam={self.lam}' if self.lam is not None else ''
        return (f'{self.__class__.__name__}(mode={self.mode!r}, alpha={self.alpha}{extra}, '
                f'num_classes={self.num_classes})')
