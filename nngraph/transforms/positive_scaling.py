"""Random positive rescaling of hidden neurons, for homogeneous activations."""
from __future__ import annotations

import math
from typing import List, Tuple

from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph import activations as A
from nngraph.graph import rescale_hidden
from nngraph.transforms._base import WeightSpaceTransform, per_hidden_layer, uniform


@functional_transform('random_positive_scaling')
class RandomPositiveScaling(WeightSpaceTransform):
    r"""Rescales every hidden neuron by a random positive factor (functional
    name: :obj:`random_positive_scaling`). Each hidden neuron :math:`i` of
    layer :math:`l` draws :math:`c_i \sim \mathcal{U}(\mathrm{low},
    \mathrm{high})` and

    .. math::
        W_l \leftarrow C_l W_l, \quad b_l \leftarrow C_l b_l, \quad
        W_{l+1} \leftarrow W_{l+1} C_l^{-1}, \qquad C_l = \mathrm{diag}(c),

    which keeps the function when :math:`\sigma(cz) = c\,\sigma(z)` for
    :math:`c > 0` (positive homogeneity).

    Args:
        low (float): smallest factor, :math:`> 0`.
        high (float): largest factor, :math:`\ge` :obj:`low`; :obj:`low ==
            high` gives a fixed factor.

    Valid for: positively homogeneous activations (``relu``,
    ``leaky_relu``); any other raises a ``ValueError`` naming the transform
    and the activation. Preserves: the function (up to float rounding).
    """

    def __init__(self, low: float, high: float) -> None:
        low, high = float(low), float(high)
        if not 0.0 < low <= high < math.inf:
            # an infinite factor makes inf, and NaN where it meets a zero weight
            raise ValueError(f'RandomPositiveScaling: need 0 < low <= high < inf, got low={low}, high={high}')
        self.low, self.high = low, high

    def _check(self, acts: Tuple[str, ...], sizes: Tuple[int, ...]) -> None:
        A.require(acts, len(sizes) - 1, 'homogeneous', self.__class__.__name__)

    def _draw(self, sizes, acts, batch_shape, like) -> List[Tensor]:
        return per_hidden_layer(uniform(self.low, self.high, (*batch_shape, sum(sizes[1:-1])), like), sizes)

    def _transform(self, weights, biases, params, acts):
        return rescale_hidden(weights, biases, params)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(low={self.low}, high={self.high})'
