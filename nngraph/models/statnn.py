r"""StatNN: a network described by statistics of its weights (Unterthiner et
al., "Predicting Neural Network Accuracy from Weights", 2020), one of the
calibration baselines of DWSNets (Navon et al., 2023)."""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from nngraph.graph import architecture, stacked_layer_views
from nngraph.transforms._base import require_finite

__all__ = ['QUANTILES', 'STATISTICS', 'statnn_features', 'StatNNEncoder']

#: The quantile levels of every parameter tensor (min, quartiles, max).
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Names of the statistics of one tensor, in feature order.
STATISTICS = ('mean', 'var') + tuple(f'q{int(q * 100)}' for q in QUANTILES)


def _statistics(t: Tensor) -> Tensor:
    """``[B, 7]``: mean, variance and quantiles of every row of ``t [B, n]``."""
    n = t.size(1)
    # Quantiles with linear interpolation (torch.quantile's and numpy's
    # default) from one sort; torch.quantile refuses inputs above 2^24 elements.
    s = t.sort(dim=1).values
    pos = torch.tensor(QUANTILES, dtype=t.dtype, device=t.device) * (n - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    q = s[:, lo] + (pos - lo.to(t.dtype)) * (s[:, hi] - s[:, lo])
    # Population variance: a one-element tensor (an output bias) has variance 0, not NaN.
    return torch.cat([t.mean(1, keepdim=True), t.var(1, correction=0, keepdim=True), q], dim=1)


def statnn_features(batch: Union[Data, Batch]) -> Tensor:
    r"""``[B, 2 L \cdot 7]``: for every layer :math:`l`, the statistics of
    :data:`STATISTICS` (mean, population variance, 0/25/50/75/100% quantiles)
    of its weight matrix :math:`W_l`, then of its bias :math:`b_l`, in layer
    order. Channel 0 of the weights and biases, as :func:`nngraph.to_weights`.
    Whole-tensor operations over a batch of one architecture.

    Raises:
        ValueError: graphs of different architectures in one batch, or a graph
            holding a NaN or infinity (naming its index in the batch).
    """
    if not isinstance(batch, Batch):
        batch = Batch.from_data_list([batch])
    sizes = architecture(batch)
    if any(s != sizes[0] for s in sizes):
        raise ValueError(f'StatNN features are computed per architecture; this batch mixes '
                         f'{sorted(set(sizes))} (batch graphs of one architecture)')
    # a NaN would sort to the end and become the graph's max quantile, silently
    require_finite(batch, 'StatNN')
    weights, biases = stacked_layer_views(batch)
    B = batch.num_graphs
    per_layer = [torch.cat([_statistics(w[..., 0].reshape(B, -1)), _statistics(b[..., 0])], dim=1)
                 for w, b in zip(weights, biases)]
    return torch.cat(per_layer, dim=1)


class StatNNEncoder(nn.Module):
    r"""The StatNN baseline's encoder: :func:`statnn_features` of each
    network (14 numbers per layer), standardised per feature with the mean and
    standard deviation of the training graphs (:meth:`fit_normalization`), then
    an MLP. Invariant to hidden-neuron permutations (statistics of a tensor do
    not depend on the order of its entries) but blind to everything that is
    not in those statistics.

    Args:
        num_layers (int): number of weight layers :math:`L` of the networks it
            reads (their widths may differ between batches, not within one).
        hidden (int): width of the MLP's hidden layers, and of its output.
        layers (int): number of hidden layers of the MLP (at least 1).
        dropout (float): dropout after each hidden layer.
    """

    def __init__(self, num_layers: int, hidden: int = 256, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if int(num_layers) < 1:
            raise ValueError(f'StatNNEncoder needs at least 1 weight layer, got num_layers={num_layers}')
        if int(layers) < 1:
            raise ValueError(f'StatNNEncoder needs at least 1 hidden layer, got layers={layers}')
        self.num_layers = int(num_layers)
        width = 2 * len(STATISTICS) * self.num_layers
        self.register_buffer('shift', torch.zeros(width))
        self.register_buffer('scale', torch.ones(width))
        mods = []
        for _ in range(int(layers)):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*mods)
        self.out_dim = int(hidden)

    def features(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, 14 L]``: :func:`statnn_features`, raw, after checking the depth."""
        depth = len(architecture(batch)[0]) - 1
        if depth != self.num_layers:
            raise ValueError(f'{type(self).__name__} was built for networks of {self.num_layers} weight '
                             f'layers, got one with {depth}')
        return statnn_features(batch)

    @torch.no_grad()
    def fit_normalization(self, batch: Union[Data, Batch]) -> None:
        """Sets each feature's shift and scale to its mean and standard
        deviation over a sample of training graphs (scale 1 where a feature
        is constant, e.g. the variance of a one-element bias)."""
        f = self.features(batch)
        std = f.std(0) if f.size(0) > 1 else torch.zeros_like(f[0])
        self.shift.copy_(f.mean(0))
        self.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def standardize(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, 14 L]``: the standardised features (the MLP's input)."""
        return (self.features(batch) - self.shift) / self.scale

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, hidden]`` embeddings of a batch of graphs of one architecture."""
        return self.mlp(self.standardize(batch))
