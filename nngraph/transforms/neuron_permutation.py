"""Random permutation of the hidden neurons of a network."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor
from torch_geometric.data.datapipes import functional_transform

from nngraph import activations as A
from nngraph.graph import permute_hidden
from nngraph.transforms._base import WeightSpaceTransform, per_hidden_layer


@functional_transform('random_neuron_permutation')
class RandomNeuronPermutation(WeightSpaceTransform):
    r"""Permutes the neurons of every hidden layer by an independent uniformly
    random permutation :math:`\pi_l` (functional name:
    :obj:`random_neuron_permutation`):

    .. math::
        W_l \leftarrow P_l W_l, \quad b_l \leftarrow P_l b_l, \quad
        W_{l+1} \leftarrow W_{l+1} P_l^\top,

    with :math:`P_l` the permutation matrix of :math:`\pi_l` (new neuron
    :math:`i` is old neuron :math:`\pi_l(i)`). An elementwise activation
    commutes with :math:`P_l`, so :math:`f` is unchanged. The result is an
    isomorphic graph kept in canonical order: weights and biases move, node
    ids do not. Input and output neurons are never permuted.

    Takes no arguments. On a :class:`~torch_geometric.data.Batch` of one
    architecture every graph gets its own permutations, drawn in one call
    (``argsort`` of uniform noise, which is a uniform permutation).

    Valid for: every (elementwise) activation. Preserves: the function
    exactly (weights are only moved, never changed; evaluated outputs agree
    up to the order of float summation).
    """

    def _check(self, acts: Tuple[str, ...], sizes: Tuple[int, ...]) -> None:
        A.hidden_activations(acts, len(sizes) - 1)   # parses: unknown names fail here

    def _draw(self, sizes, acts, batch_shape, like) -> List[Tensor]:
        if batch_shape:
            noise = torch.rand(*batch_shape, sum(sizes[1:-1]), device=like.device)
            return [u.argsort(dim=-1) for u in per_hidden_layer(noise, sizes)]
        return [torch.randperm(d, device=like.device) for d in sizes[1:-1]]

    def _transform(self, weights, biases, params, acts):
        return permute_hidden(weights, biases, params)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'
