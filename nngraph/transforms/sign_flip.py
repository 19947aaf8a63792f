"""Random sign flips of hidden neurons, for odd activations."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph import activations as A
from nngraph.graph import rescale_hidden
from nngraph.transforms._base import WeightSpaceTransform, per_hidden_layer


@functional_transform('random_sign_flip')
class RandomSignFlip(WeightSpaceTransform):
    r"""Flips the sign of random hidden neurons of a network with an odd
    activation, :math:`\sigma(-z) = -\sigma(z)` (functional name:
    :obj:`random_sign_flip`). Each hidden neuron :math:`i` of layer
    :math:`l` independently draws :math:`s_i = -1` with probability :math:`p`
    (else :math:`+1`), and

    .. math::
        W_l \leftarrow S_l W_l, \quad b_l \leftarrow S_l b_l, \quad
        W_{l+1} \leftarrow W_{l+1} S_l, \qquad S_l = \mathrm{diag}(s),

    so :math:`W_{l+1} S \sigma(S z) = W_{l+1} S S \sigma(z) = W_{l+1}\sigma(z)`.

    Args:
        p (float): probability of flipping each hidden neuron, in
            :math:`[0, 1]`. (default: :obj:`0.5`)

    Valid for: odd activations (``sine``, ``tanh``); any other raises a
    ``ValueError`` naming the transform and the activation. Preserves: the
    function exactly (up to float rounding; negation itself is exact).
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f'RandomSignFlip: p must be in [0, 1], got {p}')
        self.p = float(p)

    def _check(self, acts: Tuple[str, ...], sizes: Tuple[int, ...]) -> None:
        A.require(acts, len(sizes) - 1, 'odd', self.__class__.__name__)

    def _draw(self, sizes, acts, batch_shape, like) -> List[Tensor]:
        flip = torch.rand(*batch_shape, sum(sizes[1:-1]), device=like.device) < self.p
        signs = 1 - 2 * flip.to(like.dtype)                               # -1 where flipped
        return per_hidden_layer(signs, sizes)

    def _transform(self, weights, biases, params, acts):
        return rescale_hidden(weights, biases, params)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(p={self.p})'
