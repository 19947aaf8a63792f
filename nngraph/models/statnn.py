r"""StatNN: a network described by statistics of its weights (Unterthiner et
al., "Predicting Neural Network Accuracy from Weights", 2020), one of the
calibration baselines of DWSNets (Navon et al., 2023).

Networks of one depth give a fixed feature vector (14 numbers per layer).
Networks of mixed depths (a model zoo) give one slot of 14 numbers per layer
*position*, padded to ``max_layers``: the hidden layers fill slots 0, 1, ...
from the input side and the output layer always takes the last slot (it maps
to the classes in every network, so its statistics mean the same thing
whatever the depth); a presence indicator per slot says which slots a
network fills, and an absent slot's statistics are 0 after standardisation.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from nngraph.graph import architecture, stacked_layer_views, validate
from nngraph.transforms._base import require_finite_eager

__all__ = ['QUANTILES', 'STATISTICS', 'statnn_features', 'padded_statnn_features', 'StatNNEncoder']

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
    require_finite_eager(batch, 'StatNN')
    weights, biases = stacked_layer_views(batch)
    B = batch.num_graphs
    per_layer = [torch.cat([_statistics(w[..., 0].reshape(B, -1)), _statistics(b[..., 0])], dim=1)
                 for w, b in zip(weights, biases)]
    return torch.cat(per_layer, dim=1)


def _segment_statistics(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """``[S, 7]``: the statistics of :func:`_statistics` of every segment of
    ``values [n]`` (``segment [n]`` its id in ``[0, S)``), all segments at
    once: scatter sums for mean and population variance, and quantiles read
    from one sort of the values grouped by segment. Empty segments give 0."""
    count = torch.zeros(num_segments, dtype=values.dtype, device=values.device).index_add_(
        0, segment, torch.ones_like(values))
    safe = count.clamp(min=1)
    mean = torch.zeros_like(count).index_add_(0, segment, values) / safe
    var = torch.zeros_like(count).index_add_(0, segment, (values - mean[segment]) ** 2) / safe
    # Values sorted inside each segment: sort by value, then stably by segment.
    by_value = values.argsort(stable=True)
    order = by_value[segment[by_value].argsort(stable=True)]
    ordered = values[order]
    start = torch.cumsum(count, 0) - count                       # first index of each segment
    pos = torch.tensor(QUANTILES, dtype=values.dtype, device=values.device) * (count - 1).clamp(min=0)[:, None]
    lo, hi = pos.floor(), pos.ceil()
    last = max(int(values.numel()) - 1, 0)
    at = lambda k: ordered[(start[:, None] + k).long().clamp(0, last)]
    q = at(lo) + (pos - lo) * (at(hi) - at(lo))                 # [S, 5]
    return torch.cat([mean[:, None], var[:, None], q], dim=1) * (count > 0)[:, None]


def padded_statnn_features(batch: Union[Data, Batch], max_layers: int) -> Tuple[Tensor, Tensor]:
    r"""``(features [B, 14 max_layers], present [B, max_layers])`` of a batch
    of networks of any depths up to ``max_layers``, mixed in one batch: slot
    ``k < L - 1`` holds the statistics of hidden layer ``k`` of a network of
    :math:`L` weight layers, the last slot its output layer, in the order of
    :func:`statnn_features` (14 per slot: weights, then bias); absent slots
    hold 0 and ``present`` 0. For networks of depth ``max_layers`` the
    features are :func:`statnn_features` (up to summation order).

    Raises:
        ValueError: a network deeper than ``max_layers``, edited edges, or a
            NaN or infinity (naming the graph's index in the batch).
    """
    if not isinstance(batch, Batch):
        batch = Batch.from_data_list([batch])
    sizes = validate(batch)        # the layer of each weight is read from `layer` and edge_index
    depth = torch.tensor([len(s) - 1 for s in sizes], device=batch.x.device)
    if int(depth.max()) > max_layers:
        raise ValueError(f'StatNN was built for networks of at most {max_layers} weight layers, got one with '
                         f'{int(depth.max())} (graph {int(depth.argmax())} of the batch)')
    require_finite_eager(batch, 'StatNN')
    B = len(sizes)

    def slots(layer: Tensor, graph: Tensor) -> Tensor:
        # weight layer l of a network of depth L -> slot l, its output layer -> the last slot
        out = layer == depth[graph] - 1
        return graph * max_layers + torch.where(out, torch.full_like(layer, max_layers - 1), layer)

    src = batch.edge_index[0]
    edge_graph, node_graph = batch.batch[src], batch.batch
    w = _segment_statistics(batch.edge_attr[:, 0], slots(batch.layer[src], edge_graph), B * max_layers)
    hidden = batch.layer > 0                                   # input neurons carry no bias
    b = _segment_statistics(batch.x[hidden, 0], slots(batch.layer[hidden] - 1, node_graph[hidden]),
                            B * max_layers)
    features = torch.cat([w, b], dim=1).view(B, max_layers * 2 * len(STATISTICS))
    k = torch.arange(max_layers, device=depth.device)
    present = ((k[None, :] < depth[:, None] - 1) | (k[None, :] == max_layers - 1)).to(features.dtype)
    return features, present


class StatNNEncoder(nn.Module):
    r"""The StatNN baseline's encoder: :func:`statnn_features` of each
    network (14 numbers per layer), standardised per feature with the mean and
    standard deviation of the training graphs (:meth:`fit_normalization`), then
    an MLP. Invariant to hidden-neuron permutations (statistics of a tensor do
    not depend on the order of its entries) but blind to everything that is
    not in those statistics.

    With ``variable_depth`` it reads networks of any depth up to
    ``num_layers``, mixed in one batch (a model zoo):
    :func:`padded_statnn_features` and the ``num_layers`` presence
    indicators, each feature standardised over the training graphs that have
    its slot, and an absent slot's features 0.

    Args:
        num_layers (int): number of weight layers :math:`L` of the networks it
            reads (their widths may differ between batches, not within one);
            with ``variable_depth``, the largest depth.
        hidden (int): width of the MLP's hidden layers, and of its output.
        layers (int): number of hidden layers of the MLP (at least 1).
        dropout (float): dropout after each hidden layer.
        variable_depth (bool): networks of mixed depths and architectures.
    """

    def __init__(self, num_layers: int, hidden: int = 256, layers: int = 2, dropout: float = 0.0,
                 variable_depth: bool = False) -> None:
        super().__init__()
        if int(num_layers) < 1:
            raise ValueError(f'StatNNEncoder needs at least 1 weight layer, got num_layers={num_layers}')
        if int(layers) < 1:
            raise ValueError(f'StatNNEncoder needs at least 1 hidden layer, got layers={layers}')
        self.num_layers = int(num_layers)
        self.variable_depth = bool(variable_depth)
        width = 2 * len(STATISTICS) * self.num_layers + (self.num_layers if self.variable_depth else 0)
        self.register_buffer('shift', torch.zeros(width))
        self.register_buffer('scale', torch.ones(width))
        mods = []
        for _ in range(int(layers)):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*mods)
        self.out_dim = int(hidden)

    def features(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, 14 L]``: :func:`statnn_features`, raw, after checking the
        depth; with ``variable_depth`` ``[B, 15 L]``: the padded features
        then the presence indicators."""
        if self.variable_depth:
            return torch.cat(padded_statnn_features(batch, self.num_layers), dim=1)
        depth = len(architecture(batch)[0]) - 1
        if depth != self.num_layers:
            raise ValueError(f'{type(self).__name__} was built for networks of {self.num_layers} weight '
                             f'layers, got one with {depth}')
        return statnn_features(batch)

    def _present(self, f: Tensor) -> Tensor:
        """``[B, width]``: 1 where a feature exists (its slot is present; the
        indicators always), from the indicators at the end of ``f``."""
        per_slot = f[:, -self.num_layers:].repeat_interleave(2 * len(STATISTICS), dim=1)
        return torch.cat([per_slot, torch.ones_like(f[:, -self.num_layers:])], dim=1)

    @torch.no_grad()
    def fit_normalization(self, batch: Union[Data, Batch]) -> None:
        """Sets each feature's shift and scale to its mean and standard
        deviation over a sample of training graphs (scale 1 where a feature
        is constant, e.g. the variance of a one-element bias); with
        ``variable_depth`` over the graphs that have the feature's slot."""
        f = self.features(batch)
        if self.variable_depth:
            m = self._present(f)
            n = m.sum(0)
            mean = (f * m).sum(0) / n.clamp(min=1)
            std = (((f - mean) ** 2 * m).sum(0) / (n - 1).clamp(min=1)).sqrt()
        else:
            mean = f.mean(0)
            std = f.std(0) if f.size(0) > 1 else torch.zeros_like(f[0])
        self.shift.copy_(mean)
        self.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def standardize(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, width]``: the standardised features (the MLP's input); an
        absent slot's features are 0 (``variable_depth``)."""
        f = self.features(batch)
        z = (f - self.shift) / self.scale
        return z * self._present(f) if self.variable_depth else z

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """``[B, hidden]`` embeddings of a batch of graphs of one architecture."""
        return self.mlp(self.standardize(batch))
