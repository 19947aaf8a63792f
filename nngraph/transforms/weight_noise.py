"""Zero-mean Gaussian weight noise, relative to each layer's weight scale."""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph.transforms._base import WeightSpaceTransform, add_to_bias


@functional_transform('weight_noise')
class WeightNoise(WeightSpaceTransform):
    r"""Adds zero-mean Gaussian noise to every weight and bias, scaled per
    layer to that layer's weight spread (functional name:
    :obj:`weight_noise`):

    .. math::
        W_l \leftarrow W_l + \epsilon\,\sigma_l\,Z_W, \quad
        b_l \leftarrow b_l + \epsilon\,\sigma_l\,Z_b, \qquad
        Z \sim \mathcal{N}(0, I),

    where :math:`\sigma_l` is the (population) standard deviation of the
    entries of :math:`W_l` of *this* graph and :math:`\epsilon` is
    :obj:`std`. The bias noise uses the weights' :math:`\sigma_l` too, since a
    layer's biases are often all zero (no spread of their own). Fresh noise is
    drawn for every call and every graph of a batch.

    Args:
        std (float): noise standard deviation relative to each layer's weight
            standard deviation, :math:`\ge 0`.

    Valid for: any activation. Preserves: nothing exactly (a data-agnostic
    augmentation); in expectation the weights.
    """

    def __init__(self, std: float) -> None:
        if not 0.0 <= float(std) < math.inf:
            # an infinite std turns a layer of equal weights (sigma 0) into 0 * inf = NaN
            raise ValueError(f'WeightNoise: std must be >= 0 and finite, got {std}')
        self.std = float(std)

    def _draw(self, sizes, acts, batch_shape, like) -> Tuple[List[Tensor], List[Tensor]]:
        c, layers = like.size(-1), range(len(sizes) - 1)
        counts = [sizes[l + 1] * sizes[l] * c for l in layers] + [sizes[l + 1] for l in layers]
        # one RNG call for every weight and bias, then per-layer views of it
        z = torch.randn(*batch_shape, sum(counts), device=like.device, dtype=like.dtype)
        parts = z.split(counts, dim=-1)
        z_w = [parts[l].view(*batch_shape, sizes[l + 1], sizes[l], c) for l in layers]
        return z_w, list(parts[len(layers):])

    def _transform(self, weights, biases, params, acts):
        z_w, z_b = params
        for l, w in enumerate(weights):
            # population std in two passes: ~15x faster than Tensor.std on strided
            # batch views, and the same formula on both paths keeps them bit-equal
            dims = (-3, -2, -1)
            centred = w - w.mean(dim=dims, keepdim=True)
            sigma = centred.square().mean(dim=dims, keepdim=True).sqrt() * self.std  # [..., 1, 1, 1]
            weights[l] = w + sigma * z_w[l]
            biases[l] = add_to_bias(biases[l], sigma[..., 0, 0] * z_b[l])
        return weights, biases

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(std={self.std})'
