r"""The aligned flat baseline: every network weight-matched to one fixed
reference network, then the flat MLP (DWSNets' "MLP + alignment" row; Navon
et al., 2023, with weight matching of Ainsworth et al., 2023)."""
from __future__ import annotations

import copy
import math
from typing import Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from nngraph import activations as A
from nngraph.graph import layer_offsets, structure, validate
from nngraph.matching import align
from nngraph.models.classifier import FlatMLPEncoder
from nngraph.transforms._base import require_finite_eager

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
    one assignment per network and hidden layer, everything else batched):
    ~3,500 graphs/s on one idle thread (2,700 with signs), against ~8,000
    graphs/s for the whole flat forward (``benchmarks/baselines.py``), so
    aligning every batch of every epoch would dominate training on 55,000
    FMNIST INRs. Hence a cache, exact by construction: each network's aligned
    parameters are stored under its raw parameters (looked up by an integer
    key, then compared in full), so an unaugmented network is aligned
    once per run and an augmented one (a transform changed its weights) is a
    miss and aligned afresh. The cache is not saved with the model and is
    emptied when the reference changes.

    A network's key (:meth:`cache_keys`) is a pure function of the bytes of
    its float32 parameters, the same alone or in any batch and on any CPU: it
    is computed in exact integer arithmetic, never from a float sum whose
    rounding depends on the batch size or the BLAS kernels. Equal values with
    different bytes (``0.0`` and ``-0.0``) get different keys: a miss, aligned
    once more, never a wrong hit.

    Args:
        layer_sizes (sequence of int): the one architecture it reads.
        hidden (int): width of the MLP's hidden layers, and of its output.
        layers (int): number of hidden layers of the MLP (at least 1).
        dropout (float): dropout after each hidden layer.
        signs (bool): also match signs; only for odd hidden activations
            (sine, tanh).
        max_iter (int): most coordinate-descent sweeps of the matching.
        cache_size (int): most networks whose alignment is kept (0: no cache).
    """

    def __init__(self, layer_sizes: Sequence[int], hidden: int = 256, layers: int = 2, dropout: float = 0.0,
                 signs: bool = False, max_iter: int = 100, cache_size: int = 200_000) -> None:
        super().__init__(layer_sizes, hidden=hidden, layers=layers, dropout=dropout)
        self.signs, self.max_iter, self.cache_size = bool(signs), int(max_iter), int(cache_size)
        node_off, edge_off = layer_offsets(self.layer_sizes)
        # The reference's parameters (channel 0, what the flat MLP reads), in
        # canonical order; saved in checkpoints.
        self.register_buffer('reference_edge_attr', torch.zeros(edge_off[-1], 1))
        self.register_buffer('reference_x', torch.zeros(node_off[-1], 1))
        self.register_buffer('has_reference', torch.tensor(False))
        edge_index, layer = structure(self.layer_sizes)        # the reference's canonical structure
        self.register_buffer('reference_edge_index', edge_index, persistent=False)
        self.register_buffer('reference_layer', layer, persistent=False)
        P = edge_off[-1] + node_off[-1] - self.layer_sizes[0]
        self._num_params = P
        # Key weights: two columns of random integers, one row per 16-bit half
        # of a float32. Every product and partial sum of ``halves @ weights``
        # is an integer below 2^53, so float64 computes it exactly in any
        # order: the key does not depend on BLAS's summation order.
        bits = 52 - 15 - math.ceil(math.log2(2 * P))     # |half| <= 2^15, 2P terms
        if bits < 16:
            raise ValueError(f'{type(self).__name__}: {P} parameters are too many for exact cache keys; '
                             f'use cache_size=0')
        gen = torch.Generator().manual_seed(0)
        weights = torch.randint(0, 2 ** bits, (2, 2 * P), generator=gen, dtype=torch.int64)
        self._key_weights = [w.to(torch.float64) for w in weights]
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forgets every cached alignment (the reference changed)."""
        self._keys = torch.zeros(0, dtype=torch.int64)      # sorted keys [K]
        self._raw = torch.zeros(0, self._num_params)         # [K, P] what was aligned
        self._aligned = torch.zeros(0, self._num_params)     # [K, P] its alignment

    def cache_keys(self, raw: Tensor) -> Tensor:
        """``[B]`` int64 keys of the networks ``raw [B, P]`` (float32 on the
        CPU, :meth:`flatten`'s layout): a pure function of each row's bytes,
        the same for a network alone or in any batch. Two random linear forms
        of the row's 16-bit halves with random ``b``-bit weights (``b >= 16``;
        25 for a 2-32-32-1 network), each reduced modulo the prime 2^31 - 1:
        two distinct networks share a key with probability at most 2^-2b (a
        shared key costs a miss, never a wrong hit: rows are compared in full)."""
        if raw.dtype != torch.float32 or raw.dim() != 2 or raw.size(1) != self._num_params:
            raise ValueError(f'cache_keys takes float32 [B, {self._num_params}], got {raw.dtype} '
                             f'{list(raw.shape)}')
        halves = raw.contiguous().view(torch.int16).to(torch.float64)       # [B, 2P], exact
        prime = 2 ** 31 - 1
        h0, h1 = ((halves @ w).to(torch.int64) % prime for w in self._key_weights)
        return h0 * prime + h1

    def _check_signs(self, activation, where: str) -> None:
        if self.signs:
            A.require(activation, len(self.layer_sizes) - 1, 'odd',
                      f'aligned_mlp with sign matching (model.align_signs: true) on {where}')

    @torch.no_grad()
    def set_reference(self, graph: Data) -> None:
        """Makes ``graph`` (a network of ``layer_sizes``) the reference."""
        if isinstance(graph, Batch):
            raise TypeError('set_reference takes one graph, not a Batch')
        sizes = validate(graph)[0]
        if sizes != self.layer_sizes:
            raise ValueError(f'{type(self).__name__} was built for layer sizes {self.layer_sizes}, '
                             f'the reference has {sizes}')
        require_finite_eager(graph, f'{type(self).__name__}.set_reference')
        self._check_signs(graph.activation, 'the reference')
        self.reference_edge_attr.copy_(graph.edge_attr[:, :1])
        self.reference_x.copy_(graph.x[:, :1])
        self.has_reference.fill_(True)
        self.clear_cache()

    def reference(self) -> Data:
        """The reference network as a graph (weights and biases only)."""
        return Data(x=self.reference_x, edge_attr=self.reference_edge_attr,
                    edge_index=self.reference_edge_index, layer=self.reference_layer,
                    layer_sizes=self.layer_sizes)

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
        raw = super().flatten(batch)                  # checks the graphs and the architecture
        if self.cache_size <= 0:
            return super().flatten(self.align(batch))
        with torch.no_grad():
            raw_cpu = raw.detach().to('cpu', torch.float32)
            key = self.cache_keys(raw_cpu)                               # [B]
            hit = torch.zeros(raw.size(0), dtype=torch.bool)
            if self._keys.numel():
                pos = torch.searchsorted(self._keys, key).clamp_(max=self._keys.numel() - 1)
                hit = (self._keys[pos] == key) & (self._raw[pos] == raw_cpu).all(1)
            if bool(hit.all()):
                return self._aligned[pos].to(raw.device, raw.dtype)
            aligned = super().flatten(self.align(batch))
            miss = ~hit
            room = self.cache_size - self._keys.numel()
            if room > 0:
                new = miss.nonzero().squeeze(1)[:room]
                keys = torch.cat([self._keys, key[new]])
                order = keys.argsort()
                self._keys = keys[order]
                self._raw = torch.cat([self._raw, raw_cpu[new]])[order]
                self._aligned = torch.cat([self._aligned, aligned.detach().to('cpu', torch.float32)[new]])[order]
        return aligned

    @torch.no_grad()
    def fit_normalization(self, batch: Graph) -> None:
        """Takes the first graph of ``batch`` as the reference, then fits the
        per-block standardisation on the aligned networks."""
        first = batch.get_example(0) if isinstance(batch, Batch) else batch
        self.set_reference(first)
        super().fit_normalization(batch)

    def extra_repr(self) -> str:
        return f'signs={self.signs}, max_iter={self.max_iter}, cache_size={self.cache_size}'
