"""A canonical sign per hidden neuron, for odd activations."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph import activations as A
from nngraph.graph import rescale_hidden
from nngraph.transforms._base import WeightSpaceTransform

RULES = ('bias', 'out')


@functional_transform('canonical_signs')
class CanonicalSigns(WeightSpaceTransform):
    r"""Puts every hidden neuron of a network with an odd activation in a
    canonical sign (functional name: :obj:`canonical_signs`): the one of the
    :math:`2^{d_l}` sign-flipped copies of layer :math:`l` (see
    :class:`~nngraph.transforms.RandomSignFlip`) in which each neuron's

    * ``'bias'``: bias :math:`b_i \ge 0`;
    * ``'out'``: sum of outgoing weights :math:`\sum_j (W_{l+1})_{ji} \ge 0`
      (for the last hidden layer of a one-output network: the one outgoing
      weight).

    The result is the same function, and the same graph for every sign-flipped
    copy of a network (up to neurons whose criterion is exactly zero, which
    keep their sign): a model that reads canonical graphs is invariant to sign
    flips by construction. Deterministic. Under ``'out'`` the layers are
    canonicalised from the last hidden layer backwards, since a flip of layer
    :math:`l+1` changes the column sums of :math:`W_{l+1}`.

    Args:
        by (str): the rule, ``'bias'`` or ``'out'``. (default: :obj:`'bias'`)

    Valid for: odd activations (``sine``, ``tanh``); any other raises a
    ``ValueError`` naming the transform and the activation. Preserves: the
    function exactly (negation is exact).
    """

    def __init__(self, by: str = 'bias') -> None:
        if by not in RULES:
            raise ValueError(f'CanonicalSigns: by must be one of {RULES}, got {by!r}')
        self.by = by

    def _check(self, acts: Tuple[str, ...], sizes: Tuple[int, ...]) -> None:
        A.require(acts, len(sizes) - 1, 'odd', self.__class__.__name__)

    def _draw(self, sizes, acts, batch_shape, like) -> None:
        return None

    def _transform(self, weights: List[Tensor], biases: List[Tensor], params, acts):
        hidden = range(len(weights) - 1)
        if self.by == 'bias':
            # A flip of layer l negates b_l only through its own neurons, and no
            # other layer's flip touches b_l: every layer's signs read at once.
            return rescale_hidden(weights, biases, [_sign(biases[l][..., 0]) for l in hidden])
        # A flip of layer l+1 negates rows of W_{l+1} and so changes layer l's
        # column sums: canonicalise from the last hidden layer (whose outgoing
        # weights feed the output, which never flips) backwards.
        signs = [None] * len(hidden)
        for l in reversed(hidden):
            signs[l] = _sign(weights[l + 1][..., 0].sum(-2))          # column sums of W_{l+1}
            only_l = [s if k == l else None for k, s in enumerate(signs)]
            weights, biases = rescale_hidden(weights, biases, only_l)
        return weights, biases

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(by='{self.by}')"


def _sign(criterion: Tensor) -> Tensor:
    """``-1`` where ``criterion < 0``, else ``+1`` (zero keeps its sign)."""
    return torch.where(criterion < 0, -1.0, 1.0).to(criterion.dtype)
