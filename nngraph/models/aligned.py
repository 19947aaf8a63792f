r"""The aligned flat baseline: every network weight-matched to one fixed
reference network, then the flat MLP (DWSNets' "MLP + alignment" row; Navon
et al., 2023, with weight matching of Ainsworth et al., 2023)."""
from __future__ import annotations

import copy
from typing import Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from nngraph import activations as A
from nngraph.graph import architecture, layer_offsets
from nngraph.matching import align
from nngraph.models.classifier import FlatMLPEncoder

__all__ = ['AlignedMLPEncoder']

Graph = Union[Data, Batch]


class AlignedMLPEncoder(FlatMLPEncoder):
    r"""A :class:`FlatMLPEncoder` that first aligns each input network to a
    fixed reference with :func:`nngraph.matching.align` (weight matching:
    the hidden-neuron permutation, and with ``signs`` the sign flips, that
    bring the network's parameters closest to the reference's). Networks
    that differ only by such a symmetry are aligned to the same parameters,
    so the embedding is invariant to hidden-neuron permutations (and, with
    ``signs``, to sign flips) as far as the matching finds the same optimum.

    The reference is the first graph :meth:`fit_normalization` sees (the
    first training graph in ``train.py``), kept in buffers so that it is saved
    with the model. Alignment runs on the CPU (:func:`scipy.optimize.linear_sum_assignment`,
    one assignment per network and hidden layer, everything else batched),
    in every forward: it is exact under any augmentation of the batch, and
    needs no cache that a transform could make stale. The price, measured
    on digits-INR (2-32-32-1, 2 busy cores, ``benchmarks/baselines.py``): the
    aligned forward runs at ~450 graphs/s against the flat MLP's ~8,000,
    and a train.py epoch at about half the flat MLP's graphs/s (146 vs 313).
    Alignment alone: ~3,500 graphs/s on one idle thread (2,700 with signs).

    Args:
        layer_sizes (sequence of int): the one architecture it reads.
        hidden (int): width of the MLP's hidden layers, and of its output.
        layers (int): number of hidden layers of the MLP (at least 1).
        dropout (float): dropout after each hidden layer.
        signs (bool): also match signs; only for odd hidden activations
            (sine, tanh).
        max_iter (int): most coordinate-descent sweeps of the matching.
    """

    def __init__(self, layer_sizes: Sequence[int], hidden: int = 256, layers: int = 2, dropout: float = 0.0,
                 signs: bool = False, max_iter: int = 100) -> None:
        super().__init__(layer_sizes, hidden=hidden, layers=layers, dropout=dropout)
        self.signs, self.max_iter = bool(signs), int(max_iter)
        node_off, edge_off = layer_offsets(self.layer_sizes)
        # The reference's parameters (channel 0, what the flat MLP reads), in
        # canonical order; saved in checkpoints.
        self.register_buffer('reference_edge_attr', torch.zeros(edge_off[-1], 1))
        self.register_buffer('reference_x', torch.zeros(node_off[-1], 1))
        self.register_buffer('has_reference', torch.tensor(False))

    def _check_signs(self, activation, where: str) -> None:
        if self.signs:
            A.require(activation, len(self.layer_sizes) - 1, 'odd',
                      f'aligned_mlp with sign matching (model.align_signs: true) on {where}')

    @torch.no_grad()
    def set_reference(self, graph: Data) -> None:
        """Makes ``graph`` (a network of ``layer_sizes``) the reference."""
        if isinstance(graph, Batch):
            raise TypeError('set_reference takes one graph, not a Batch')
        if architecture(graph)[0] != self.layer_sizes:
            raise ValueError(f'{type(self).__name__} was built for layer sizes {self.layer_sizes}, '
                             f'the reference has {architecture(graph)[0]}')
        self._check_signs(graph.activation, 'the reference')
        self.reference_edge_attr.copy_(graph.edge_attr[:, :1])
        self.reference_x.copy_(graph.x[:, :1])
        self.has_reference.fill_(True)

    def reference(self) -> Data:
        """The reference network as a graph (weights and biases only)."""
        return Data(x=self.reference_x, edge_attr=self.reference_edge_attr, layer_sizes=self.layer_sizes)

    @torch.no_grad()
    def align(self, batch: Graph) -> Graph:
        """``batch`` (channel 0 of its parameters) aligned to the reference."""
        if not bool(self.has_reference):
            raise RuntimeError(f'{type(self).__name__} has no reference network yet: call fit_normalization '
                               '(or set_reference) on training graphs, or load a checkpoint')
        other = copy.copy(batch)
        other.edge_attr, other.x = batch.edge_attr[:, :1], batch.x[:, :1]
        return align(self.reference(), other, signs=self.signs, max_iter=self.max_iter)

    def flatten(self, batch: Graph) -> Tensor:
        """``[B, P]``: the aligned networks' weights then biases, raw."""
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        bad = [s for s in architecture(batch) if s != self.layer_sizes]
        if bad:
            raise ValueError(f'{type(self).__name__} was built for layer sizes {self.layer_sizes}, '
                             f'got a graph with {bad[0]}')
        return super().flatten(self.align(batch))

    @torch.no_grad()
    def fit_normalization(self, batch: Graph) -> None:
        """Takes the first graph of ``batch`` as the reference, then fits the
        per-block standardisation on the aligned networks."""
        first = batch.get_example(0) if isinstance(batch, Batch) else batch
        self.set_reference(first)
        super().fit_normalization(batch)

    def extra_repr(self) -> str:
        return f'signs={self.signs}, max_iter={self.max_iter}'
