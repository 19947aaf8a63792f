"""MixUp of a network with an aligned, perturbed copy of itself."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from nngraph import activations as A
from nngraph.graph import (layer_views, permute_hidden, rescale_hidden, stacked_layer_views,
                           with_layers, with_stacked_layers)
from nngraph.matching import apply_matching, match_layers
from nngraph.transforms.mixup import mix_layers, random_perms, sample_lam

__all__ = ['SelfAlignMixUp']


def _noisy(weights: Sequence[Tensor], biases: Sequence[Tensor], std: float,
           stacked: bool) -> Tuple[List[Tensor], List[Tensor]]:
    """Adds zero-mean Gaussian noise with standard deviation ``std`` times the
    standard deviation of the layer's weights (per graph for stacked views)
    to each layer's weights and bias."""
    out_w, out_b = [], []
    for w, b in zip(weights, biases):
        dims = tuple(range(1, w.dim())) if stacked else tuple(range(w.dim()))
        scale = std * w.std(dim=dims, keepdim=True, correction=0)        # [B, 1, 1, 1] or [1, 1, 1]
        out_w.append(w + scale * torch.randn_like(w))
        out_b.append(b + scale.reshape(scale.shape[:-1]) * torch.randn_like(b))
    return out_w, out_b


@functional_transform('self_align_mixup')
class SelfAlignMixUp(BaseTransform):
    r"""MixUp of a network with a perturbed copy of itself that has been
    aligned back to it. The copy is the sample with every hidden layer
    randomly permuted, every hidden neuron's sign flipped with probability
    1/2 (odd activations, ``signs``), and Gaussian noise of standard deviation
    ``noise`` times each layer's weight standard deviation added to that
    layer's weights and bias. The copy is then aligned to the sample by weight
    matching (:func:`nngraph.matching.align`, with signs when they were
    flipped) and mixed,

    .. math::
        \theta = \lambda\,\theta + (1 - \lambda)\,\mathrm{align}_\theta\big(\pi(\theta) + \varepsilon\big),
        \qquad \lambda \sim \mathrm{Beta}(\alpha, \alpha),

    so the result is a sample-specific interpolation towards a noisy
    equivalent of itself; the label is kept. Without noise the alignment
    undoes the permutation and signs exactly and the sample comes back
    (up to float rounding): the noise is what makes this an augmentation.

    A :class:`~torch_geometric.data.Batch` of one architecture is perturbed
    and mixed in one tensor op per layer; the alignment matches all pairs
    with batched matrix products and one assignment per pair and layer.
    Randomness from torch's global RNG: permutations, signs, noise, then
    :math:`\lambda`.

    Valid for: any activation (sign flips only for odd ones).
    Preserves: the label; the function only approximately (for small noise).

    Args:
        alpha (float, optional): Beta concentration; ``None`` draws
            :math:`\lambda` from :math:`\mathcal{U}(0, 1)`.
        noise (float): relative noise std of the copy (0 disables noise).
        signs (bool, optional): flip random signs in the copy and match
            signs; ``None`` (default) does so exactly for odd activations,
            ``True`` refuses other activations with a ``ValueError``.
        lam (float, optional): a fixed :math:`\lambda` instead of a random one.
        max_iter (int): most weight-matching sweeps.
    """

    def __init__(self, alpha: Optional[float] = None, noise: float = 0.1, *,
                 signs: Optional[bool] = None, lam: Optional[float] = None,
                 max_iter: int = 100) -> None:
        if alpha is not None and not alpha > 0:
            raise ValueError(f'SelfAlignMixUp: alpha must be positive or None, got {alpha}')
        if not noise >= 0:
            raise ValueError(f'SelfAlignMixUp: noise must be non-negative, got {noise}')
        if lam is not None and not 0.0 <= lam <= 1.0:
            raise ValueError(f'SelfAlignMixUp: lam must lie in [0, 1], got {lam}')
        self.alpha, self.noise, self.signs, self.lam, self.max_iter = alpha, noise, signs, lam, max_iter

    def _use_signs(self, activation, num_layers: int) -> bool:
        if self.signs is True:
            A.require(activation, num_layers, 'odd', 'SelfAlignMixUp(signs=True)')
            return True
        if self.signs is None:
            return all(a.odd for a in A.hidden_activations(activation, num_layers))
        return False

    def forward(self, data: Data) -> Data:
        stacked = isinstance(data, Batch)
        if stacked:
            acts = data.activation
            acts = [acts] if isinstance(acts, (str, tuple)) else list(acts)
            if any(a != acts[0] for a in acts):
                raise ValueError('SelfAlignMixUp: the batch mixes activations; the batch path '
                                 'needs one architecture')
            ws, bs = stacked_layer_views(data)
            activation, sizes, B = acts[0], tuple(data.layer_sizes[0]), data.num_graphs
        else:
            ws, bs = layer_views(data)
            activation, sizes, B = data.activation, tuple(data.layer_sizes), None
        device = data.edge_attr.device
        signs = self._use_signs(activation, len(sizes) - 1)
        shape = () if B is None else (B,)

        wc, bc = permute_hidden(ws, bs, random_perms(sizes, B, device))
        if signs:
            flips = [torch.randint(0, 2, shape + (d,), device=device) * 2 - 1 for d in sizes[1:-1]]
            wc, bc = rescale_hidden(wc, bc, flips)
        if self.noise > 0:
            wc, bc = _noisy(wc, bc, self.noise, stacked)
        lam = (torch.full(shape, float(self.lam), device=device) if self.lam is not None
               else sample_lam(self.alpha, shape, device=device))

        m = match_layers(ws, bs, wc, bc, signs=signs, max_iter=self.max_iter)
        wc, bc = apply_matching(wc, bc, m)
        mixed = mix_layers(lam, ws, bs, wc, bc)
        return with_stacked_layers(data, *mixed) if stacked else with_layers(data, *mixed)

    def __repr__(self) -> str:
        extra = f', lam={self.lam}' if self.lam is not None else ''
        return (f'{self.__class__.__name__}(alpha={self.alpha}, noise={self.noise}, '
                f'signs={self.signs}{extra})')
