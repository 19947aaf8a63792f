"""Random zeroing of individual weights."""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph.transforms._base import WeightSpaceTransform


@functional_transform('weight_dropout')
class WeightDropout(WeightSpaceTransform):
    r"""Sets every weight to zero independently with probability :math:`p`
    (functional name: :obj:`weight_dropout`):

    .. math::
        W_l \leftarrow M_l \odot W_l, \qquad M_{l,ij} \sim \mathrm{Bernoulli}(1 - p).

    Biases are kept, and the surviving weights are *not* rescaled by
    :math:`1/(1-p)`: the augmented network is a sparsified copy of the
    original, not an unbiased estimate of it. The graph keeps all its edges
    (dropped ones carry weight 0), so its structure and canonical order are
    unchanged.

    Args:
        p (float): probability of zeroing each weight, in :math:`[0, 1]`.

    Valid for: any activation. Preserves: nothing exactly (a data-agnostic
    augmentation); the weights that survive are unchanged.
    """

    def __init__(self, p: float) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f'WeightDropout: p must be in [0, 1], got {p}')
        self.p = float(p)

    def _draw(self, sizes, acts, batch_shape, like) -> List[Tensor]:
        # one mask entry per weight (shared by its edge channels), one RNG call
        layers = range(len(sizes) - 1)
        counts = [sizes[l + 1] * sizes[l] for l in layers]
        keep = torch.rand(*batch_shape, sum(counts), device=like.device) >= self.p
        return [m.view(*batch_shape, sizes[l + 1], sizes[l], 1)
                for l, m in zip(layers, keep.split(counts, dim=-1))]

    def _transform(self, weights, biases, params, acts):
        weights = [torch.where(keep, w, torch.zeros((), dtype=w.dtype, device=w.device))
                   for w, keep in zip(weights, params)]
        return weights, biases

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(p={self.p})'
