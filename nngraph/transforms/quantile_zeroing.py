"""Zeroing of each layer's smallest-magnitude weights, up to a random quantile."""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph.transforms._base import WeightSpaceTransform, uniform


@functional_transform('quantile_zeroing')
class QuantileZeroing(WeightSpaceTransform):
    r"""Zeroes the weights of smallest magnitude, layer by layer, up to a
    random quantile (functional name: :obj:`quantile_zeroing`). Each graph
    draws one :math:`q \sim \mathcal{U}(0, q_{\max})`; in every layer
    :math:`l` with :math:`n_l` weights,

    .. math::
        W_{l,ij} \leftarrow 0 \quad \text{if } |W_{l,ij}| < \tau_l, \qquad
        \tau_l = |W_l|_{(\lfloor q\, n_l \rfloor + 1)},

    the :math:`(\lfloor q n_l \rfloor + 1)`-th smallest magnitude (the lower
    empirical :math:`q`-quantile), so about a fraction :math:`q` of each
    layer's weights (exactly :math:`\lfloor q n_l \rfloor` when magnitudes
    are distinct) becomes zero. The quantile is taken *per layer*, not over
    the whole network: layers live on different scales (a SIREN's first layer
    and its last differ by orders of magnitude), and a global threshold would
    wipe out whole small-scale layers. Biases are kept.

    Args:
        max_quantile (float): :math:`q_{\max}`, in :math:`[0, 1]`.

    Valid for: any activation. Preserves: nothing exactly (a data-agnostic,
    magnitude-pruning augmentation); every weight at or above the threshold
    is unchanged.
    """

    def __init__(self, max_quantile: float) -> None:
        if not 0.0 <= float(max_quantile) <= 1.0:
            raise ValueError(f'QuantileZeroing: max_quantile must be in [0, 1], got {max_quantile}')
        self.max_quantile = float(max_quantile)

    def _draw(self, sizes, acts, batch_shape, like) -> Tensor:
        return uniform(0.0, self.max_quantile, batch_shape, like)

    def _transform(self, weights, biases, params, acts):
        out = []
        for w in weights:
            magnitude = w[..., 0].abs().flatten(-2)                          # [..., n]
            n = magnitude.size(-1)
            rank = (params.double() * n).floor().long().clamp(max=n - 1)     # [...]
            # the rank+1 smallest magnitudes suffice: a partial sort (topk) is
            # ~2x cheaper than sorting whole rows when max_quantile is small
            smallest = magnitude.topk(int(rank.max()) + 1, dim=-1, largest=False).values
            threshold = smallest.gather(-1, rank[..., None])                 # [..., 1]
            drop = w[..., :1].abs() < threshold[..., None, None]             # [..., d_out, d_in, 1]
            out.append(torch.where(drop, torch.zeros((), dtype=w.dtype, device=w.device), w))
        return out, biases

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(max_quantile={self.max_quantile})'
