"""Exact rotation of the input space of an INR, folded into its first layer."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph.transforms._base import WeightSpaceTransform, affine_first_layer, uniform, uniform_range


def rotation_matrix(angle: Tensor, dim: int, axis: Optional[Tensor] = None) -> Tensor:
    r"""Rotation matrices :math:`R` of ``angle`` (radians, any shape ``S``),
    shape ``[*S, dim, dim]``. ``dim = 2``: counter-clockwise,
    :math:`R = \begin{pmatrix}\cos & -\sin\\ \sin & \cos\end{pmatrix}`.
    ``dim = 3``: about the unit ``axis`` (``[*S, 3]``) by Rodrigues' formula
    :math:`R = I + \sin\theta\,K + (1 - \cos\theta) K^2`, :math:`K` the
    cross-product matrix of the axis."""
    c, s = torch.cos(angle), torch.sin(angle)
    if dim == 2:
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    ux, uy, uz = axis.unbind(-1)
    zero = torch.zeros_like(ux)
    k = torch.stack([torch.stack([zero, -uz, uy], -1),
                     torch.stack([uz, zero, -ux], -1),
                     torch.stack([-uy, ux, zero], -1)], -2)          # [*S, 3, 3]
    eye = torch.eye(3, dtype=angle.dtype, device=angle.device)
    return eye + s[..., None, None] * k + (1 - c)[..., None, None] * (k @ k)


@functional_transform('input_rotation')
class InputRotation(WeightSpaceTransform):
    r"""Rotates the input space of an implicit neural representation, exactly
    (functional name: :obj:`input_rotation`). With a rotation :math:`R` the
    new network is

    .. math::
        f'(x) = f(R x), \qquad W_0 \leftarrow W_0 R

    (only the first layer changes). In words: the new INR at :math:`x` shows
    what the old one showed at :math:`R x`, so a 2-D image appears rotated by
    :math:`-\theta` about the origin of the coordinate system.

    2-D inputs: :math:`R` is the counter-clockwise rotation by
    :math:`\theta \sim \mathcal{U}(a, b)` degrees. 3-D inputs: rotation by
    :math:`\theta \sim \mathcal{U}(a, b)` degrees about :obj:`axis`, or, when
    :obj:`axis` is :obj:`None`, about an axis drawn uniformly on the unit
    sphere (independently per graph). Other input sizes raise a
    ``ValueError``.

    Args:
        degrees (float or (float, float)): :math:`\theta` range in degrees; a
            number :math:`a` means :math:`(-a, a)`, a pair :math:`(a, a)` a
            fixed angle.
        axis (sequence of 3 floats, optional): fixed rotation axis for 3-D
            inputs (normalised here). (default: :obj:`None`)

    Valid for: any activation (INRs with 2-D or 3-D inputs). Preserves: the
    function of the rotated input, :math:`f'(x) = f(Rx)`, up to float
    rounding.
    """

    def __init__(self, degrees: Union[float, Tuple[float, float]],
                 axis: Optional[Sequence[float]] = None) -> None:
        self.degrees = uniform_range(degrees, 'degrees', 'InputRotation')
        self.axis = None
        if axis is not None:
            axis = tuple(float(a) for a in axis)
            norm = math.sqrt(sum(a * a for a in axis))
            if len(axis) != 3 or not 0.0 < norm < math.inf:
                raise ValueError(f'InputRotation: axis must be a non-zero 3-vector of finite numbers, got {axis}')
            self.axis = axis

    def _check(self, acts, sizes) -> None:
        if sizes[0] not in (2, 3):
            raise ValueError(f'InputRotation rotates 2-D or 3-D inputs, but the network takes '
                             f'{sizes[0]} input features')
        if self.axis is not None and sizes[0] != 3:
            raise ValueError(f'InputRotation: axis is given but the network takes {sizes[0]}-D inputs')

    def _draw(self, sizes, acts, batch_shape, like) -> Tensor:
        # draw in float64 so a fixed angle gives the same R as math would
        ref = torch.empty((), dtype=torch.float64, device=like.device)
        low, high = self.degrees
        angle = uniform(low, high, batch_shape, ref) * (math.pi / 180.0)
        axis = None
        if sizes[0] == 3:
            if self.axis is not None:
                axis = torch.tensor(self.axis, dtype=torch.float64, device=like.device)
                axis = (axis / axis.norm()).expand(*batch_shape, 3)
            else:
                # a standard normal vector, normalised, is uniform on the sphere
                axis = torch.randn(*batch_shape, 3, dtype=torch.float64, device=like.device)
                axis = axis / axis.norm(dim=-1, keepdim=True)
        return rotation_matrix(angle, sizes[0], axis).to(like.dtype)

    def _transform(self, weights, biases, params, acts):
        return affine_first_layer(weights, biases, matrix=params)

    def __repr__(self) -> str:
        axis = '' if self.axis is None else f', axis={self.axis}'
        return f'{self.__class__.__name__}(degrees={self.degrees}{axis})'
