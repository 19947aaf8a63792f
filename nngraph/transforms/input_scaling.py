"""Exact isotropic scaling of the input space of an INR, folded into its first layer."""
from __future__ import annotations

import math

from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph.transforms._base import WeightSpaceTransform, uniform


@functional_transform('input_scaling')
class InputScaling(WeightSpaceTransform):
    r"""Scales the input space of an implicit neural representation,
    isotropically and exactly (functional name: :obj:`input_scaling`). With
    :math:`s \sim \mathcal{U}(\mathrm{low}, \mathrm{high})`,

    .. math::
        f'(x) = f(s x), \qquad W_0 \leftarrow s W_0

    (only the first layer's weights change). :math:`s > 1` shows more of the
    old INR's domain in the same window: the content appears shrunk by
    :math:`1/s` about the origin.

    Args:
        low (float): smallest factor, :math:`> 0`.
        high (float): largest factor, :math:`\ge` :obj:`low`; :obj:`low ==
            high` gives a fixed factor.

    Valid for: any activation and any input size (INRs: 2-D, 3-D).
    Preserves: the function of the scaled input, :math:`f'(x) = f(s x)`, up
    to float rounding.
    """

    def __init__(self, low: float, high: float) -> None:
        low, high = float(low), float(high)
        if not 0.0 < low <= high < math.inf:
            # an infinite factor makes inf, and NaN where it meets a zero weight
            raise ValueError(f'InputScaling: need 0 < low <= high < inf, got low={low}, high={high}')
        self.low, self.high = low, high

    def _draw(self, sizes, acts, batch_shape, like) -> Tensor:
        return uniform(self.low, self.high, batch_shape, like)

    def _transform(self, weights, biases, params, acts):
        weights[0] = weights[0] * params[..., None, None, None].to(weights[0].dtype)
        return weights, biases

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(low={self.low}, high={self.high})'
