"""Models on top of the encoder: a classifier, and the flat (non-invariant) baseline."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from nngraph.graph import architecture
from nngraph.models.encoder import GNNEncoder

__all__ = ['GraphClassifier', 'FlatMLPClassifier', 'ProjectionHead']


class GraphClassifier(nn.Module):
    r"""A :class:`GNNEncoder` followed by a linear head:
    :math:`\mathrm{logits} = W\,\mathrm{ReLU}(\mathrm{enc}(G)) + b`.
    Invariant to hidden-neuron permutations because the encoder is.

    Args:
        num_classes (int): number of classes :math:`K`.
        **encoder_kwargs: arguments of :class:`GNNEncoder` (``in_features``,
            ``out_features``, ``hidden``, ``layers``, ...).
    """

    def __init__(self, num_classes: int, **encoder_kwargs) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f'num_classes must be at least 2, got {num_classes}')
        self.num_classes = int(num_classes)
        self.encoder = GNNEncoder(**encoder_kwargs)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(self.encoder.out_dim, self.num_classes))

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, num_classes]`` logits."""
        return self.head(self.encoder(batch))


class FlatMLPClassifier(nn.Module):
    r"""The flat baseline: an MLP on the concatenation of all weights and biases
    of a network, in canonical order. It is *not* invariant to hidden-neuron
    permutations (a permuted network is a different input vector), which is
    what permutation augmentation is for.

    Args:
        num_classes (int): number of classes.
        layer_sizes (sequence of int): the one architecture it reads.
        hidden (int): width of its hidden layers.
        layers (int): number of hidden layers.
        dropout (float): dropout after each hidden layer.
    """

    def __init__(self, num_classes: int, layer_sizes: Sequence[int], hidden: int = 256,
                 layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer_sizes = tuple(int(d) for d in layer_sizes)
        self.num_classes = int(num_classes)
        n_in = sum(a * b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:])) + sum(self.layer_sizes[1:])
        mods, width = [], n_in
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        mods.append(nn.Linear(width, self.num_classes))
        self.mlp = nn.Sequential(*mods)
        self.d0 = self.layer_sizes[0]

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, num_classes]`` logits of a batch of graphs of ``layer_sizes``."""
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        sizes = architecture(batch)
        bad = [s for s in sizes if s != self.layer_sizes]
        if bad:
            raise ValueError(f'FlatMLPClassifier was built for layer sizes {self.layer_sizes}, '
                             f'got a graph with {bad[0]}')
        B = batch.num_graphs
        weights = batch.edge_attr[:, 0].view(B, -1)
        biases = batch.x[:, 0].view(B, -1)[:, self.d0:]           # input nodes carry no bias
        return self.mlp(torch.cat([weights, biases], dim=-1))


class ProjectionHead(nn.Module):
    r"""SimCLR projection head :math:`g(z) = W_2\,\mathrm{ReLU}(W_1 z)`.

    Args:
        in_dim (int): embedding size.
        out_dim (int): projection size.
    """

    def __init__(self, in_dim: int, out_dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
