"""One representative of each orbit of half-period bias shifts of sine neurons."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph import activations as A
from nngraph.transforms._base import WeightSpaceTransform
from nngraph.transforms.siren_bias_shift import shift_half_periods


@functional_transform('siren_bias_fold')
class SirenBiasFold(WeightSpaceTransform):
    r"""Folds the bias of every hidden sine neuron into one half period around
    zero (functional name: :obj:`siren_bias_fold`): the canonical
    representative of the orbit of :class:`~nngraph.transforms.SirenBiasShift`.

    With the half period :math:`h = \pi / w_0` of the neuron's layer
    (activation ``"sine:w0"``), each hidden neuron :math:`i` of layer :math:`l`
    takes the nearest whole number of half periods
    :math:`k_i = \lfloor (b_{l,i} + h/2) / h \rfloor` and

    .. math::
        b_{l,i} \leftarrow b_{l,i} - k_i h \in [-h/2,\, h/2), \qquad
        W_{l+1}[:, i] \leftarrow (-1)^{k_i} W_{l+1}[:, i],

    the shift of :class:`~nngraph.transforms.SirenBiasShift` by :math:`-k_i`:
    the same function. Every bias-shifted copy of a network folds to the same
    graph. Sign flips :math:`(w, b, v) \mapsto (-w, -b, -v)` and the shift
    :math:`S: (w, b, v) \mapsto (w, b + h, -v)` of a neuron's incoming row,
    bias and outgoing column generate the orbit
    :math:`\{(s w,\, s b + k h,\, s (-1)^k v) : s = \pm 1,\, k \in \mathbb{Z}\}`;
    folding leaves of it the sign-flip pair :math:`\{(w, b, v), (-w, -b, -v)\}`,
    which :class:`~nngraph.transforms.CanonicalSigns` resolves. So
    ``CanonicalSigns(by)(SirenBiasFold()(g))`` is one graph per orbit of sign
    flips and bias shifts together. A fold changes a layer's own biases and
    the columns of the next weight matrix, never another layer's biases, so
    all hidden layers fold at once. Deterministic.

    Up to float rounding: the folded bias :math:`b + k h - k' h` of a shifted
    copy is not bit-identical to :math:`b - k'' h`, and a bias within
    rounding of an end of the interval (or exactly at :math:`-h/2`, where a
    sign flip lands on :math:`+h/2` and folds back with the other parity) may
    fold with a different :math:`k`. A bias so large that :math:`b / h`
    overflows the dtype is left as it is (its float spacing exceeds :math:`h`).

    Valid for: sine activations (``"sine:w0"``); any other raises a
    ``ValueError`` naming the transform and the activation. Preserves: the
    function (up to float rounding of the folded bias).
    """

    def _check(self, acts: Tuple[str, ...], sizes: Tuple[int, ...]) -> None:
        A.require(acts, len(sizes) - 1, 'half_period', self.__class__.__name__)

    def _draw(self, sizes, acts, batch_shape, like) -> None:
        return None

    def _transform(self, weights: List[Tensor], biases: List[Tensor], params, acts):
        for l in range(len(weights) - 1):
            half_period = A.get(acts[l]).half_period
            b = biases[l][..., 0]                                       # [..., d_{l+1}]
            k = torch.floor((b + half_period / 2) / half_period)
            k = torch.where(torch.isfinite(k), k, torch.zeros_like(k))
            shift_half_periods(weights, biases, l, -k, half_period)    # (-1)^-k = (-1)^k
        return weights, biases

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'
