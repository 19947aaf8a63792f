"""Exact translation of the input space of an INR, folded into its first layer."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph.transforms._base import WeightSpaceTransform, affine_first_layer, uniform, uniform_range


@functional_transform('input_translation')
class InputTranslation(WeightSpaceTransform):
    r"""Translates the input space of an implicit neural representation,
    exactly (functional name: :obj:`input_translation`). With a shift
    :math:`t`,

    .. math::
        f'(x) = f(x + t), \qquad b_0 \leftarrow b_0 + W_0 t

    (only the first bias changes). The new INR at :math:`x` shows what the old
    one showed at :math:`x + t`, so the content appears moved by :math:`-t`.
    Each coordinate :math:`t_j` is drawn independently from its range.

    Args:
        max_shift (float, (float, float) or sequence of pairs): a number
            :math:`m` means :math:`t_j \sim \mathcal{U}(-m, m)` for every
            coordinate; a pair :math:`(a, b)` means :math:`\mathcal{U}(a, b)`
            for every coordinate (:math:`(a, a)` is a fixed shift); a sequence
            of :math:`d_0` pairs gives each coordinate its own range.

    Valid for: any activation and any input size (INRs: 2-D, 3-D).
    Preserves: the function of the shifted input, :math:`f'(x) = f(x + t)`,
    up to float rounding.
    """

    def __init__(self, max_shift: Union[float, Tuple[float, float], Sequence[Tuple[float, float]]]) -> None:
        self.max_shift = max_shift
        if isinstance(max_shift, (str, bytes)):
            raise ValueError(f'InputTranslation: max_shift must be a number or a (low, high) pair, '
                             f'got {max_shift!r}')
        if (not isinstance(max_shift, (int, float)) and len(max_shift) > 0
                and not isinstance(max_shift[0], (int, float))):
            self.ranges = [uniform_range(r, f'max_shift[{j}]', 'InputTranslation')
                           for j, r in enumerate(max_shift)]
        else:
            self.ranges = None
            self.range = uniform_range(max_shift, 'max_shift', 'InputTranslation')

    def _check(self, acts, sizes) -> None:
        if self.ranges is not None and len(self.ranges) != sizes[0]:
            raise ValueError(f'InputTranslation: max_shift gives {len(self.ranges)} per-coordinate '
                             f'ranges but the network takes {sizes[0]} input features')

    def _draw(self, sizes, acts, batch_shape, like) -> Tensor:
        if self.ranges is None:
            low, high = self.range
        else:
            low = torch.tensor([r[0] for r in self.ranges], dtype=like.dtype, device=like.device)
            high = torch.tensor([r[1] for r in self.ranges], dtype=like.dtype, device=like.device)
        return uniform(low, high, (*batch_shape, sizes[0]), like)

    def _transform(self, weights, biases, params, acts):
        return affine_first_layer(weights, biases, shift=params)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(max_shift={self.max_shift!r})'
