"""MixUp in weight space: interpolate a network with a partner of its architecture."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch, Data, Dataset
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from nngraph import activations as A
from nngraph.graph import (layer_offsets, layer_views, permute_hidden, stacked_layer_views,
                           with_layers, with_stacked_layers)
from nngraph.matching import apply_matching, match_layers

__all__ = ['WeightMixUp', 'sample_lam', 'soft_label']

_MODES = ('vanilla', 'permute', 'align')


def sample_lam(alpha: Optional[float], shape: Tuple[int, ...] = (), *, dtype=None,
               device=None) -> Tensor:
    r"""Mixing coefficients :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`,
    or :math:`\mathcal{U}(0, 1)` for ``alpha=None``, from torch's global RNG."""
    if alpha is None:
        return torch.rand(shape, dtype=dtype, device=device)
    conc = torch.full(shape, float(alpha), dtype=dtype or torch.get_default_dtype(), device=device)
    return torch.distributions.Beta(conc, conc).sample()


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
    y = y.reshape(-1).long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f'label {y.tolist()} is outside [0, {num_classes}); pass num_classes')
    return F.one_hot(y, num_classes).to(dtype)


def _arch_key(g: Data) -> tuple:
    act = g.activation
    return (tuple(g.layer_sizes), A.compact(A.per_layer(act, len(g.layer_sizes) - 1)),
            g.edge_attr.size(-1), g.x.size(-1), g.edge_attr.dtype)


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
            if not isinstance(g, Data) or isinstance(g, Batch) or getattr(g, 'layer_sizes', None) is None:
                raise TypeError(f'{caller}: source item {i} is not a parameter graph '
                                f'(a Data with layer_sizes), got {type(g).__name__}')
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


def _split(ea: Tensor, x: Tensor, sizes: Tuple[int, ...]) -> Tuple[List[Tensor], List[Tensor]]:
    """Stacked layer views ``[n, d_{l+1}, d_l, C]`` / ``[n, d_{l+1}, C]`` of
    stacked flat parameters ``ea [n, E, C]`` and ``x [n, N, C]``."""
    node_off, edge_off = layer_offsets(sizes)
    n = ea.shape[0]
    weights = [ea[:, edge_off[l]:edge_off[l + 1]].reshape(n, sizes[l + 1], sizes[l], -1)
               for l in range(len(sizes) - 1)]
    biases = [x[:, node_off[l + 1]:node_off[l + 2]] for l in range(len(sizes) - 1)]
    return weights, biases


def random_perms(sizes: Sequence[int], batch: Optional[int] = None, device=None) -> List[Tensor]:
    """One uniform random permutation per hidden layer, ``[d]`` or ``[B, d]``
    (argsort of uniform noise: one op for a whole batch), global RNG."""
    shape = () if batch is None else (batch,)
    return [torch.rand(shape + (d,), device=device).argsort(dim=-1) for d in sizes[1:-1]]


def mix_layers(lam: Tensor, wa: Sequence[Tensor], ba: Sequence[Tensor],
               wb: Sequence[Tensor], bb: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
    r""":math:`\lambda a + (1 - \lambda) b` per layer; ``lam`` is a scalar or
    ``[B]`` for stacked views (broadcast over each graph's parameters)."""
    def mix(a: Tensor, b: Tensor) -> Tensor:
        lm = lam.to(a.dtype).reshape(lam.shape + (1,) * (a.dim() - lam.dim()))
        return torch.lerp(b, a, lm)   # b + lam (a - b)
    return [mix(a, b) for a, b in zip(wa, wb)], [mix(a, b) for a, b in zip(ba, bb)]


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
        if alpha is not None and not alpha > 0:
            raise ValueError(f'WeightMixUp: alpha must be positive or None, got {alpha}')
        if lam is not None and not 0.0 <= lam <= 1.0:
            raise ValueError(f'WeightMixUp: lam must lie in [0, 1], got {lam}')
        if signs and mode != 'align':
            raise ValueError(f"WeightMixUp: signs=True needs mode='align', got mode={mode!r}")
        self.mode, self.alpha, self.signs, self.lam, self.max_iter = mode, alpha, signs, lam, max_iter
        self.bank = _PartnerBank(source, num_classes, 'WeightMixUp')
        self.num_classes = self.bank.num_classes

    def _lam(self, shape: Tuple[int, ...], device) -> Tensor:
        if self.lam is not None:
            return torch.full(shape, float(self.lam), device=device)
        return sample_lam(self.alpha, shape, device=device)

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

    def _partner(self, wa, ba, wb, bb, sizes, batch: Optional[int], device):
        if self.mode == 'permute':
            return permute_hidden(wb, bb, random_perms(sizes, batch, device))
        if self.mode == 'align':
            m = match_layers(wa, ba, wb, bb, signs=self.signs, max_iter=self.max_iter)
            return apply_matching(wb, bb, m)
        return wb, bb

    def forward(self, data: Data) -> Data:
        if isinstance(data, Batch):
            return self._forward_batch(data)
        key = _arch_key(data)
        self._check_signs(key)
        sizes = key[0]
        ea_bank, x_bank, y_bank = self.bank.get(key, data.edge_attr.device)
        idx = torch.randint(ea_bank.shape[0], (1,)).to(ea_bank.device)
        lam = self._lam((), data.edge_attr.device)
        wp, bp = _split(ea_bank[idx], x_bank[idx], sizes)
        wp, bp = [w[0] for w in wp], [b[0] for b in bp]
        ws, bs = layer_views(data)
        wp, bp = self._partner(ws, bs, wp, bp, sizes, None, data.edge_attr.device)
        out = with_layers(data, *mix_layers(lam, ws, bs, wp, bp))
        y = self._labels(getattr(data, 'y', None), None if y_bank is None else y_bank[idx], lam)
        if y is not None:
            out.y = y
        return out

    def _forward_batch(self, batch: Batch) -> Batch:
        acts = batch.activation
        acts = [acts] if isinstance(acts, (str, tuple)) else list(acts)
        if any(a != acts[0] for a in acts):
            raise ValueError('WeightMixUp: the batch mixes activations; the batch path needs one '
                             'architecture (layer sizes and activation)')
        ws, bs = stacked_layer_views(batch)   # raises for mixed layer sizes
        first = Data(layer_sizes=tuple(batch.layer_sizes[0]), activation=acts[0],
                     edge_attr=batch.edge_attr[:1], x=batch.x[:1])
        key = _arch_key(first)
        self._check_signs(key)
        sizes, B, device = key[0], batch.num_graphs, batch.edge_attr.device
        ea_bank, x_bank, y_bank = self.bank.get(key, device)
        idx = torch.randint(ea_bank.shape[0], (B,)).to(device)
        lam = self._lam((B,), device)
        wp, bp = _split(ea_bank[idx], x_bank[idx], sizes)
        wp, bp = self._partner(ws, bs, wp, bp, sizes, B, device)
        out = with_stacked_layers(batch, *mix_layers(lam, ws, bs, wp, bp))
        y = self._labels(getattr(batch, 'y', None), None if y_bank is None else y_bank[idx], lam)
        if y is not None:
            out.y = y
        return out

    def __repr__(self) -> str:
        extra = ', signs=True' if self.signs else ''
        extra += f', lam={self.lam}' if self.lam is not None else ''
        return (f'{self.__class__.__name__}(mode={self.mode!r}, alpha={self.alpha}{extra}, '
                f'num_classes={self.num_classes})')
