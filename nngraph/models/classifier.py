"""Models on top of the encoders: a classifier, the flat (non-invariant) baseline's encoder and classifier, a
linear head for any encoder, and the SimCLR projection head."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from nngraph.graph import validate
from nngraph.models.encoder import GNNEncoder
from nngraph.transforms._base import require_finite_eager

__all__ = ['GraphClassifier', 'FlatMLPEncoder', 'FlatMLPClassifier', 'EncoderClassifier', 'EncoderRegressor',
           'ProjectionHead']


class GraphClassifier(nn.Module):
    r"""A :class:`GNNEncoder` followed by a linear head:
    :math:`\mathrm{logits} = W\,\mathrm{ReLU}(\mathrm{enc}(G)) + b`.
    Invariant to hidden-neuron permutations because the encoder is.

    Args:
        num_classes (int): number of classes :math:`K`.
        **encoder_kwargs: arguments of :class:`GNNEncoder` (``in_features``,
            ``out_features``, ``hidden``, ``layers``, ...), or of the
            subclass's :attr:`encoder_class`.
    """

    #: the encoder built from ``encoder_kwargs``
    encoder_class = GNNEncoder

    def __init__(self, num_classes: int, **encoder_kwargs) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f'num_classes must be at least 2, got {num_classes}')
        self.num_classes = int(num_classes)
        self.encoder = self.encoder_class(**encoder_kwargs)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(self.encoder.out_dim, self.num_classes))

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, num_classes]`` logits."""
        return self.head(self.encoder(batch))


class FlatMLPEncoder(nn.Module):
    r"""The flat baseline's encoder: all weights and biases of a network
    concatenated in canonical order, standardised per parameter block (one
    shift and scale per weight matrix and per bias vector, as
    :meth:`GNNEncoder.fit_normalization` does per layer), then an MLP.
    It is *not* invariant to hidden-neuron permutations (a permuted network is
    a different input vector), which is what permutation augmentation is for.
    The per-block standardisation keeps a permutation of the network a
    permutation of the standardised input.

    Args:
        layer_sizes (sequence of int): the one architecture it reads.
        hidden (int): width of its hidden layers, and of its output.
        layers (int): number of hidden layers (at least 1).
        dropout (float): dropout after each hidden layer.
    """

    def __init__(self, layer_sizes: Sequence[int], hidden: int = 256, layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if int(layers) < 1:
            raise ValueError(f'FlatMLPEncoder needs at least 1 hidden layer, got layers={layers}')
        self.layer_sizes = tuple(int(d) for d in layer_sizes)
        sizes = self.layer_sizes
        blocks = [a * b for a, b in zip(sizes[:-1], sizes[1:])] + list(sizes[1:])
        # Block index of every flat coordinate: weight matrices first, then biases.
        self.register_buffer('block', torch.repeat_interleave(torch.arange(len(blocks)), torch.tensor(blocks)),
                             persistent=False)
        self.register_buffer('shift', torch.zeros(len(blocks)))
        self.register_buffer('scale', torch.ones(len(blocks)))
        mods, width = [], sum(blocks)
        for _ in range(int(layers)):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*mods)
        self.out_dim = int(hidden)
        self.d0 = sizes[0]

    def flatten(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, P]``: every graph's weights (canonical edge order) then its
        biases (non-input nodes), raw.

        Raises:
            ValueError: a graph of other layer sizes, with hand-edited edges,
                or holding a NaN or infinity (naming its index in the batch).
        """
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        sizes = validate(batch)         # the flat layout is read by position: refuse edited edges
        bad = [s for s in sizes if s != self.layer_sizes]
        if bad:
            raise ValueError(f'{type(self).__name__} was built for layer sizes {self.layer_sizes}, '
                             f'got a graph with {bad[0]}')
        require_finite_eager(batch, type(self).__name__)
        B = batch.num_graphs
        weights = batch.edge_attr[:, 0].view(B, -1)
        biases = batch.x[:, 0].view(B, -1)[:, self.d0:]           # input nodes carry no bias
        return torch.cat([weights, biases], dim=-1)

    @torch.no_grad()
    def fit_normalization(self, batch: Union[Data, Batch]) -> None:
        """Sets each parameter block's shift and scale to its mean and
        standard deviation over a sample of training graphs."""
        flat = self.flatten(batch)
        n = torch.bincount(self.block, minlength=self.shift.numel()).to(flat.dtype) * flat.size(0)
        mean = torch.zeros_like(self.shift).index_add_(0, self.block, flat.sum(0)) / n
        sq = torch.zeros_like(self.shift).index_add_(0, self.block, ((flat - mean[self.block]) ** 2).sum(0))
        self.shift.copy_(mean)
        self.scale.copy_((sq / (n - 1).clamp(min=1)).sqrt().clamp(min=1e-8))

    def standardize(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, P]``: :meth:`flatten` with each parameter block shifted and
        scaled by what :meth:`fit_normalization` fitted (the MLP's input)."""
        return (self.flatten(batch) - self.shift[self.block]) / self.scale[self.block]

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, hidden]`` embeddings of a batch of graphs of ``layer_sizes``."""
        return self.mlp(self.standardize(batch))


class FlatMLPClassifier(nn.Module):
    r"""The flat baseline: a :class:`FlatMLPEncoder` followed by a linear
    layer to ``num_classes`` logits.

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
        if int(num_classes) < 2:
            raise ValueError(f'num_classes must be at least 2, got {num_classes}')
        self.num_classes = int(num_classes)
        self.encoder = FlatMLPEncoder(layer_sizes, hidden=hidden, layers=layers, dropout=dropout)
        self.layer_sizes = self.encoder.layer_sizes
        self.head = nn.Linear(self.encoder.out_dim, self.num_classes)

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, num_classes]`` logits of a batch of graphs of ``layer_sizes``."""
        return self.head(self.encoder(batch))


class EncoderClassifier(nn.Module):
    r"""Any encoder that ends in a nonlinearity (an MLP baseline's: flat,
    StatNN, aligned) followed by a linear layer to ``num_classes`` logits.
    :func:`nngraph.training.fit_normalization` reaches the encoder's
    standardisation through ``.encoder``.

    Args:
        encoder (nn.Module): maps a batch of graphs to ``[B, encoder.out_dim]``.
        num_classes (int): number of classes.
    """

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f'num_classes must be at least 2, got {num_classes}')
        self.num_classes = int(num_classes)
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, self.num_classes)

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, num_classes]`` logits."""
        return self.head(self.encoder(batch))


class EncoderRegressor(nn.Module):
    r"""Any encoder followed by a linear layer to one number, in the target's
    units: :math:`\hat y = \mu + \sigma\,(w^\top \phi(\mathrm{enc}(G)) + c)`,
    with :math:`\mu, \sigma` the mean and standard deviation of the training
    targets (:meth:`fit_targets`), so the layer learns a standardised target
    whatever its scale (an accuracy in [0, 1], a learning rate).

    Args:
        encoder (nn.Module): maps a batch of graphs to ``[B, encoder.out_dim]``.
        relu (bool): a ReLU before the linear layer, for encoders whose
            output is not already after a nonlinearity (the GNN's, as in
            :class:`GraphClassifier`); the MLP baselines end in one.
    """

    def __init__(self, encoder: nn.Module, relu: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        linear = nn.Linear(encoder.out_dim, 1)
        self.head = nn.Sequential(nn.ReLU(), linear) if relu else linear
        self.register_buffer('y_shift', torch.zeros(()))
        self.register_buffer('y_scale', torch.ones(()))

    @torch.no_grad()
    def fit_targets(self, y: Tensor) -> None:
        r"""Sets :math:`\mu, \sigma` from the training targets ``y`` (scale 1
        for a constant target)."""
        y = y.detach().reshape(-1).to(self.y_shift)
        std = y.std() if y.numel() > 1 else torch.zeros(())
        self.y_shift.copy_(y.mean())
        self.y_scale.copy_(std if float(std) > 1e-12 else torch.ones(()))

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, 1]`` predictions in the target's units."""
        return self.y_shift + self.y_scale * self.head(self.encoder(batch))


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
