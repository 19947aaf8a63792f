"""Half-period bias shifts of sine neurons."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph import activations as A
from nngraph.transforms._base import WeightSpaceTransform, add_to_bias, per_hidden_layer


@functional_transform('siren_bias_shift')
class SirenBiasShift(WeightSpaceTransform):
    r"""Shifts the bias of every hidden sine neuron by a random whole number
    of half periods (functional name: :obj:`siren_bias_shift`).

    A SIREN layer computes :math:`\sin(w_0 z)` with :math:`z = W x + b`
    (activation ``"sine:w0"``), and

    .. math::
        \sin\!\big(w_0 (z + k\pi / w_0)\big) = (-1)^k \sin(w_0 z),

    so each hidden neuron :math:`i` of layer :math:`l` draws
    :math:`k_i \sim \mathcal{U}\{-k_{\max}, \dots, k_{\max}\}` and

    .. math::
        b_{l,i} \leftarrow b_{l,i} + k_i \frac{\pi}{w_0}, \qquad
        W_{l+1}[:, i] \leftarrow (-1)^{k_i} W_{l+1}[:, i].

    The half period :math:`\pi / w_0` is in units of :math:`z` and is taken
    from each hidden layer's own activation.

    Args:
        k_max (int): largest number of half periods to shift by, :math:`\ge 0`.
            (default: :obj:`1`)

    Valid for: sine activations (``"sine:w0"``); any other raises a
    ``ValueError`` naming the transform and the activation. Preserves: the
    function (up to float rounding of the shifted bias).
    """

    def __init__(self, k_max: int = 1) -> None:
        try:
            whole = not isinstance(k_max, bool) and int(k_max) == k_max and k_max >= 0
        except (TypeError, ValueError, OverflowError):       # None, 'a', NaN, inf
            whole = False
        if not whole:
            raise ValueError(f'SirenBiasShift: k_max must be a non-negative integer, got {k_max!r}')
        self.k_max = int(k_max)

    def _check(self, acts: Tuple[str, ...], sizes: Tuple[int, ...]) -> None:
        A.require(acts, len(sizes) - 1, 'half_period', self.__class__.__name__)

    def _draw(self, sizes, acts, batch_shape, like) -> List[Tensor]:
        k = torch.randint(-self.k_max, self.k_max + 1, (*batch_shape, sum(sizes[1:-1])),
                          device=like.device)
        return per_hidden_layer(k, sizes)

    def _transform(self, weights, biases, params, acts):
        for l, k in enumerate(params):
            shift_half_periods(weights, biases, l, k, A.get(acts[l]).half_period)
        return weights, biases

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k_max={self.k_max})'


def shift_half_periods(weights: List[Tensor], biases: List[Tensor], l: int, k: Tensor, half_period: float) -> None:
    """In place on the lists: hidden layer ``l``'s biases ``+= k * half_period``
    and its neurons' outgoing columns of ``W_{l+1}`` times ``(-1)^k`` (``k``
    whole numbers, per neuron, any sign): the same function."""
    biases[l] = add_to_bias(biases[l], k.to(biases[l].dtype) * half_period)
    sign = 1 - 2 * torch.remainder(k, 2)                                # (-1)^k, k may be < 0
    weights[l + 1] = weights[l + 1] * sign.to(weights[l + 1].dtype)[..., None, :, None]
