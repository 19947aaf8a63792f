r"""The GNN weight-space encoder: a PyG batch of parameter graphs in, one
embedding per graph out, invariant to permutations of hidden neurons.

Every layer updates node states :math:`h` and edge states :math:`e`. For an
edge :math:`u \to v` (weight of layer :math:`l`) the edge-conditioned hidden
message is a concatenation MLP over the source, the target and the edge,

.. math::
    a_{uv} = \mathrm{ReLU}\big(W_e\,\bar e_{uv} + W_s\,\bar h_u + W_t\,\bar h_v + c\big),
    \qquad e_{uv} \leftarrow e_{uv} + W_o\,a_{uv},

(:math:`\bar{\cdot}` is LayerNorm), and nodes read it in both directions, each
direction with its own projection and learned direction embedding
:math:`\delta`:

.. math::
    m^{\rightarrow}_v = W_{\rightarrow} \operatorname{aggr}_{u \to v} a_{uv} + \delta_{\rightarrow},\quad
    m^{\leftarrow}_u = W_{\leftarrow} \operatorname{aggr}_{u \to v} a_{uv} + \delta_{\leftarrow},\quad
    h \leftarrow h + \mathrm{MLP}([\bar h, m^{\rightarrow}, m^{\leftarrow}]).

:math:`W_e \bar e + W_s \bar h_u + W_t \bar h_v` *is* the first layer of an MLP
on the concatenation :math:`[\bar e, \bar h_u, \bar h_v]`, but the node terms
are computed once per node (a node-level matmul) and only added per edge, and
the direction projections are applied after aggregation (linear maps commute
with sums and means): per edge there are two :math:`D \times D` matmuls and no
concatenation. On a batch of one architecture the edges of each weight layer
are a dense ``[B, d_{l+1}, d_l, D]`` block (canonical order, see ``DESIGN.md``),
so the per-edge node terms are broadcasts and the aggregations are sums over
one axis: no gather and no scatter at all. Mixed batches take the general path
(``index_select`` + :func:`torch_geometric.utils.scatter`); both compute the
same function (tested).
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from nngraph.graph import forward, layer_offsets, validate
from nngraph.transforms._base import require_finite
from nngraph.transforms.canonical_signs import CanonicalSigns
from nngraph.transforms.siren_bias_fold import SirenBiasFold

__all__ = ['GNNEncoder', 'EncoderLayer', 'FourierFeatures', 'AGGREGATIONS', 'parse_aggr']

AGGREGATIONS = ('mean', 'sum', 'max')


class FourierFeatures(nn.Module):
    r"""Random Fourier features of a scalar (per channel) weight :math:`w`:
    :math:`[w, \sin(2\pi w B), \cos(2\pi w B)]` with a fixed Gaussian
    :math:`B \in \mathbb{R}^{C \times F}`, :math:`B_{ij} \sim \mathcal{N}(0, \sigma^2)`.

    Args:
        channels (int): input channels :math:`C`.
        features (int): number of frequencies :math:`F` (output ``C + 2F``).
        scale (float): standard deviation :math:`\sigma` of the frequencies.
    """

    def __init__(self, channels: int, features: int, scale: float = 10.0) -> None:
        super().__init__()
        # A fixed seed: two encoders built with the same arguments see the same
        # frequencies, and the buffer is saved in the state dict anyway.
        gen = torch.Generator().manual_seed(0)
        self.register_buffer('freqs', torch.randn(channels, features, generator=gen) * scale)
        self.out_channels = channels + 2 * features

    def forward(self, w: Tensor) -> Tensor:
        proj = 2 * math.pi * (w @ self.freqs)
        return torch.cat([w, torch.sin(proj), torch.cos(proj)], dim=-1)


@functools.lru_cache(maxsize=64)
def _degrees(sizes: Tuple[int, ...]) -> Tuple[Tensor, Tensor]:
    """In- and out-degree ``[N_g]`` of every node of one architecture (cached)."""
    sizes_t = torch.tensor(sizes)
    zero = torch.zeros(1, dtype=torch.long)
    in_deg = torch.repeat_interleave(torch.cat([zero, sizes_t[:-1]]), sizes_t)
    out_deg = torch.repeat_interleave(torch.cat([sizes_t[1:], zero]), sizes_t)
    return in_deg, out_deg


def parse_aggr(aggr: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """``'mean'``, ``'mean,max'`` or ``['mean', 'max']`` as a tuple of
    aggregators, each one of :data:`AGGREGATIONS` (``ValueError`` else)."""
    names = tuple(a.strip() for a in aggr.split(',')) if isinstance(aggr, str) else tuple(aggr)
    bad = [a for a in names if a not in AGGREGATIONS]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f'aggr must be one or more distinct of {AGGREGATIONS} '
                         f"(e.g. 'mean' or 'mean,max'), got {aggr!r}")
    return names


def _aggregate(a: Tensor, dim: int, aggrs: Tuple[str, ...]) -> Tensor:
    """The aggregators over ``dim``, concatenated along the channels."""
    out = [a.mean(dim) if g == 'mean' else a.sum(dim) if g == 'sum' else a.amax(dim) for g in aggrs]
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


class EncoderLayer(nn.Module):
    r"""One message-passing layer of :class:`GNNEncoder` (the math is in the
    module docstring): updates edge states and node states, pre-LayerNorm,
    residual on both.

    Args:
        hidden (int): state width :math:`D` of nodes and edges.
        aggr (str): ``'mean'``, ``'sum'`` or ``'max'`` over a node's edges of
            one direction, or several at once (``'mean,max'``: concatenated,
            as PNA does, before the direction projection).
        dropout (float): dropout on the edge hidden message and the node update.
        edge_hidden (int): width of edge states and edge messages (default
            ``hidden``); edges outnumber nodes ~17x on 2-32-32-1 networks, so
            this width sets most of the cost.
        scatter_backend (str): ``'pyg'`` (:func:`torch_geometric.utils.scatter`,
            which itself uses torch-scatter where it is faster) or
            ``'torch_scatter'`` (call torch-scatter directly; benchmarks only).
    """

    def __init__(self, hidden: int, aggr: str = 'mean', dropout: float = 0.0,
                 scatter_backend: str = 'pyg', edge_hidden: Optional[int] = None) -> None:
        super().__init__()
        D = hidden
        De = edge_hidden or hidden
        self.edge_hidden = De
        self.aggrs = parse_aggr(aggr)
        self.aggr = ','.join(self.aggrs)
        self.scatter_backend = scatter_backend
        self.node_norm = nn.LayerNorm(D)
        self.edge_norm = nn.LayerNorm(De)
        self.node_terms = nn.Linear(D, 2 * De, bias=False)    # [W_s | W_t]
        self.edge_in = nn.Linear(De, De)                       # W_e, c
        self.edge_out = nn.Linear(De, De)                      # W_o
        k = len(self.aggrs)
        self.to_fwd = nn.Linear(k * De, D, bias=False)         # W_->
        self.to_rev = nn.Linear(k * De, D, bias=False)         # W_<-
        self.direction = nn.Parameter(torch.zeros(2, D))       # delta_->, delta_<-
        self.node_mlp = nn.Sequential(nn.Linear(3 * D, 2 * D), nn.ReLU(), nn.Linear(2 * D, D))
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.direction, std=0.02)

    # Shared tail: direction projections, direction embeddings, node update.
    def _node_update(self, h: Tensor, hn: Tensor, fwd: Tensor, rev: Tensor,
                     in_deg: Tensor, out_deg: Tensor) -> Tensor:
        # A direction embedding belongs to each message; under 'sum' a node
        # receives it once per edge, under 'mean'/'max' once if it has edges.
        if self.aggrs == ('sum',):
            wf, wr = in_deg, out_deg
        else:
            wf, wr = (in_deg > 0).to(h.dtype), (out_deg > 0).to(h.dtype)
        m_fwd = self.to_fwd(fwd) + wf.unsqueeze(-1) * self.direction[0]
        m_rev = self.to_rev(rev) + wr.unsqueeze(-1) * self.direction[1]
        return h + self.drop(self.node_mlp(torch.cat([hn, m_fwd, m_rev], dim=-1)))

    def forward_sparse(self, h: Tensor, e: Tensor, src: Tensor, dst: Tensor,
                       in_deg: Tensor, out_deg: Tensor) -> Tuple[Tensor, Tensor]:
        """General path: ``h [N, D]``, ``e [E, D]``, edges ``src -> dst``."""
        hn = self.node_norm(h)
        st = self.node_terms(hn)
        D = self.edge_hidden
        z = self.edge_in(self.edge_norm(e)) + st[:, :D].index_select(0, src) + st[:, D:].index_select(0, dst)
        a = self.drop(self.act(z))
        e = e + self.edge_out(a)
        N = h.size(0)
        if self.scatter_backend == 'torch_scatter':
            import torch_scatter
            reduce = torch_scatter.scatter
        else:
            reduce = scatter
        fwd = torch.cat([reduce(a, dst, dim=0, dim_size=N, reduce=g) for g in self.aggrs], dim=-1)
        rev = torch.cat([reduce(a, src, dim=0, dim_size=N, reduce=g) for g in self.aggrs], dim=-1)
        return self._node_update(h, hn, fwd, rev, in_deg, out_deg), e

    def forward_blocks(self, h: Tensor, e: List[Tensor], sizes: Tuple[int, ...],
                       in_deg: Tensor, out_deg: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Uniform path: ``h [B, N_g, D]``; ``e[l]`` is ``[B, d_{l+1}, d_l, D]``."""
        node_off, _ = layer_offsets(sizes)
        hn = self.node_norm(h)
        st = self.node_terms(hn)
        D = self.edge_hidden
        s_terms, t_terms = st[..., :D], st[..., D:]
        new_e, fwd, rev = [], [], []
        for l, e_l in enumerate(e):
            src_t = s_terms[:, node_off[l]:node_off[l + 1]].unsqueeze(1)        # [B, 1, d_l, D]
            dst_t = t_terms[:, node_off[l + 1]:node_off[l + 2]].unsqueeze(2)    # [B, d_{l+1}, 1, D]
            a = self.drop(self.act(self.edge_in(self.edge_norm(e_l)) + src_t + dst_t))
            new_e.append(e_l + self.edge_out(a))
            fwd.append(_aggregate(a, 2, self.aggrs))    # into layer l+1: [B, d_{l+1}, k D]
            rev.append(_aggregate(a, 1, self.aggrs))    # into layer l:   [B, d_l, k D]
        k = len(self.aggrs)
        zeros_in = h.new_zeros(h.size(0), sizes[0], k * D)
        zeros_out = h.new_zeros(h.size(0), sizes[-1], k * D)
        fwd = torch.cat([zeros_in] + fwd, dim=1)
        rev = torch.cat(rev + [zeros_out], dim=1)
        return self._node_update(h, hn, fwd, rev, in_deg, out_deg), new_e

    def forward_dense(self, h: Tensor, e: Tensor, mask: Tensor,
                      in_deg: Tensor, out_deg: Tensor) -> Tuple[Tensor, Tensor]:
        """Dense padded path (the baseline of the benchmark): ``h [B, N, D]``,
        ``e [B, N, N, D]`` with ``e[b, u, v]`` the edge ``u -> v``, ``mask
        [B, N, N]`` true where an edge exists. Supports ``'mean'`` and ``'sum'``."""
        hn = self.node_norm(h)
        st = self.node_terms(hn)
        D = self.edge_hidden
        m = mask.unsqueeze(-1).to(h.dtype)
        z = self.edge_in(self.edge_norm(e)) + st[..., :D].unsqueeze(2) + st[..., D:].unsqueeze(1)
        a = self.drop(self.act(z)) * m
        e = e + self.edge_out(a) * m
        fwd, rev = a.sum(1), a.sum(2)
        if self.aggrs == ('mean',):
            fwd = fwd / in_deg.clamp(min=1).unsqueeze(-1)
            rev = rev / out_deg.clamp(min=1).unsqueeze(-1)
        return self._node_update(h, hn, fwd, rev, in_deg, out_deg), e


class GNNEncoder(nn.Module):
    r"""Permutation-invariant GNN encoder of parameter graphs.

    Node inputs: the node features (bias in channel 0, and any further
    channels) through a linear map, plus a learned embedding per hidden layer
    index shared by all neurons of that layer (so permuting hidden neurons
    cannot change the output) and a unique learned embedding for each input
    and each output neuron (they are not interchangeable). Edge inputs: the
    weight, optionally through :class:`FourierFeatures`, through a linear map,
    plus a learned embedding of the weight layer. Then ``layers`` x
    :class:`EncoderLayer`. Readout (invariant to hidden permutations): the mean
    of all node states, the mean of all edge states and the states of the input
    and output neurons in their order, concatenated, LayerNorm, linear to
    ``out_dim``.

    Batches may mix architectures (different hidden widths and depths) as long
    as every graph has ``in_features`` input and ``out_features`` output
    neurons; uniform batches take the fast block path, mixed ones the scatter
    path (same function).

    Args:
        in_features (int): input width :math:`d_0` of the encoded networks.
        out_features (int): output width :math:`d_L` of the encoded networks.
        hidden (int): node state width :math:`D`.
        edge_hidden (int): edge state width (``None``: ``hidden``).
        layers (int): number of message-passing layers.
        out_dim (int): embedding size (``None``: ``hidden``).
        dropout (float): dropout inside the layers.
        aggr (str): ``'mean'``, ``'sum'``, ``'max'`` or several, comma-separated
            (see :class:`EncoderLayer`).
        fourier_features (int): number of random Fourier frequencies of the
            edge weight (0: the weight goes in linearly).
        fourier_scale (float): standard deviation of those frequencies.
        node_channels (int): channels of ``x`` (1 for a plain bias).
        edge_channels (int): channels of ``edge_attr``.
        max_layers (int): largest number of weight layers of an encoded network.
        scatter_backend (str): see :class:`EncoderLayer`.
        probe_points (int): :math:`P`; with :math:`P > 0` each node also gets
            its neuron's activation at :math:`P` fixed points of
            :math:`[-1, 1]^{d_0}` (the encoded network is evaluated; inputs get
            the points, outputs the network's values). Equivariant to hidden
            permutations, so the encoder stays invariant.
        canonical_signs (str): ``None``, or a rule of
            :class:`~nngraph.transforms.CanonicalSigns` (``'bias'``,
            ``'out'``) applied to every input first: for odd activations the
            encoder is then invariant to hidden-neuron sign flips as well.
        fold_siren_bias (bool): apply :class:`~nngraph.transforms.SirenBiasFold`
            to every input first (before ``canonical_signs``): each hidden sine
            neuron's bias folded into :math:`[-h/2, h/2)`, so the encoder is
            invariant to :class:`~nngraph.transforms.SirenBiasShift` (and with
            ``canonical_signs`` to sign flips and bias shifts together, up to
            float rounding). Sine activations only.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 64, layers: int = 4,
                 out_dim: Optional[int] = None, dropout: float = 0.0, aggr: str = 'mean',
                 fourier_features: int = 0, fourier_scale: float = 10.0, node_channels: int = 1,
                 edge_channels: int = 1, max_layers: int = 16, scatter_backend: str = 'pyg',
                 edge_hidden: Optional[int] = None, probe_points: int = 0,
                 canonical_signs: Optional[str] = None, fold_siren_bias: bool = False) -> None:
        super().__init__()
        # the fold first: it leaves of a neuron's (sign flip x bias shift) orbit
        # the sign-flip pair, which CanonicalSigns then resolves
        self.fold = SirenBiasFold() if fold_siren_bias else None
        self.canonical = CanonicalSigns(canonical_signs) if canonical_signs else None
        for t in (self.fold, self.canonical):
            if t is not None:
                # check() refuses non-finite graphs before the transform sees them; a
                # second check would be a second device sync per forward
                t.check_finite = False
        if scatter_backend not in ('pyg', 'torch_scatter'):
            raise ValueError(f"scatter_backend must be 'pyg' or 'torch_scatter', got {scatter_backend!r}")
        for name, v in (('in_features', in_features), ('out_features', out_features),
                        ('hidden', hidden), ('layers', layers), ('max_layers', max_layers)):
            if int(v) < 1:
                raise ValueError(f'{name} must be a positive integer, got {v}')
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.hidden, self.num_layers = int(hidden), int(layers)
        self.out_dim = int(out_dim) if out_dim is not None else self.hidden
        self.node_channels, self.edge_channels = int(node_channels), int(edge_channels)
        self.max_layers = int(max_layers)
        self.aggr = ','.join(parse_aggr(aggr))
        D = self.hidden
        De = self.edge_hidden = int(edge_hidden) if edge_hidden else D
        self.fourier = FourierFeatures(edge_channels, fourier_features, fourier_scale) if fourier_features > 0 else None
        edge_in = self.fourier.out_channels if self.fourier is not None else edge_channels
        # Standardisation of weights and biases per layer index (SIREN hidden
        # weights are ~1e-2, first-layer weights ~1: unscaled, the small ones
        # vanish next to the embeddings). Identity until fit_normalization.
        self.register_buffer('edge_shift', torch.zeros(self.max_layers, edge_channels))
        self.register_buffer('edge_scale', torch.ones(self.max_layers, edge_channels))
        self.register_buffer('node_shift', torch.zeros(self.max_layers + 1, node_channels))
        self.register_buffer('node_scale', torch.ones(self.max_layers + 1, node_channels))
        self.edge_embed = nn.Linear(edge_in, De)
        self.edge_layer_embed = nn.Embedding(self.max_layers, De)
        # Probe features (as in neural-graphs): every neuron's activation at
        # P fixed input points, a per-neuron feature that moves with the neuron
        # under any hidden permutation, so invariance is kept.
        self.probe_points = int(probe_points)
        gen = torch.Generator().manual_seed(1)
        self.register_buffer('probe_inputs', torch.rand(self.probe_points, self.in_features, generator=gen) * 2 - 1)
        self.node_embed = nn.Linear(node_channels + self.probe_points, D)
        self.hidden_layer_embed = nn.Embedding(self.max_layers, D)   # index = layer (1..L-1)
        self.input_embed = nn.Embedding(self.in_features, D)
        self.output_embed = nn.Embedding(self.out_features, D)
        self.layers = nn.ModuleList(
            EncoderLayer(D, aggr, dropout, scatter_backend, De) for _ in range(self.num_layers))
        width = (1 + self.in_features + self.out_features) * D + De
        self.readout_norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, self.out_dim)

    # ------------------------------------------------------------------ checks
    # Under torch.compile the checks run eagerly (a graph break): they read
    # Python-side sizes and compare index tensors, nothing worth tracing.
    @torch.compiler.disable
    def check(self, batch: Union[Data, Batch]) -> List[Tuple[int, ...]]:
        """Raises ``ValueError`` if some graph does not fit the encoder, or
        holds a NaN or infinity (naming the graph's index in the batch and the
        field); returns the layer sizes of every graph."""
        sizes = validate(batch)   # edge_index is read here: refuse hand-edited edges
        if batch.x.dim() != 2 or batch.x.size(-1) != self.node_channels:
            raise ValueError(f'encoder built for node features with {self.node_channels} channel(s), '
                             f'got x of shape {tuple(batch.x.shape)}')
        if batch.edge_attr.dim() != 2 or batch.edge_attr.size(-1) != self.edge_channels:
            raise ValueError(f'encoder built for edge features with {self.edge_channels} channel(s), '
                             f'got edge_attr of shape {tuple(batch.edge_attr.shape)}')
        for i, s in enumerate(sizes):
            if s[0] != self.in_features or s[-1] != self.out_features or len(s) - 1 > self.max_layers:
                raise ValueError(
                    f'graph {i} has layer sizes {s}, but the encoder was built for networks with '
                    f'{self.in_features} inputs, {self.out_features} outputs and at most '
                    f'{self.max_layers} weight layers')
        # A NaN weight would make the graph's logits NaN, and through the loss
        # every parameter: refused here, where the graph can still be named.
        require_finite(batch, type(self).__name__)
        return sizes

    # ------------------------------------------------------------------ inputs
    @torch.no_grad()
    def fit_normalization(self, batch: Batch) -> None:
        r"""Sets the per-layer standardisation of inputs from a sample of
        graphs: weights of weight layer :math:`l` become
        :math:`(w - \mu_l) / \sigma_l`, biases of node layer :math:`l` likewise
        (statistics over all graphs, neurons and channels of the sample; input
        nodes are left as they are). Stored as buffers, so saved with the model.

        Args:
            batch: a :class:`~torch_geometric.data.Batch` of training graphs.
        """
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        self.check(batch)
        batch = self._canonical(batch)        # the statistics of what forward reads
        edge_layer = batch.layer.index_select(0, batch.edge_index[0])
        L = int(batch.layer.max())
        for l in range(L + 1):
            w = batch.edge_attr[edge_layer == l]
            if l < L and w.size(0) > 1:
                self.edge_shift[l] = w.mean(0)
                self.edge_scale[l] = w.std(0).clamp(min=1e-8)
            b = batch.x[batch.layer == l]
            if l > 0 and b.size(0) > 1:
                self.node_shift[l] = b.mean(0)
                self.node_scale[l] = b.std(0).clamp(min=1e-8)

    def _canonical(self, batch: Batch) -> Batch:
        """``batch`` through the fold and the canonical signs, where enabled."""
        if self.fold is not None:
            batch = self.fold(batch)
        if self.canonical is not None:
            batch = self.canonical(batch)
        return batch

    def _edge_inputs(self, edge_attr: Tensor) -> Tensor:
        return self.edge_embed(self.fourier(edge_attr) if self.fourier is not None else edge_attr)

    def _probe_uniform(self, batch: Batch) -> Tensor:
        """``[B, N_g, P]``: activations of every neuron at the probe points."""
        outs = forward(batch, self.probe_inputs.to(batch.edge_attr.dtype), all_layers=True, check=False)  # [B, P, d_l]
        return torch.cat(outs, dim=-1).transpose(1, 2)

    def _probe_sparse(self, batch: Batch) -> Tensor:
        """``[N, P]`` for a batch of any architectures (one small forward per
        graph: only mixed batches come here)."""
        probe = self.probe_inputs.to(batch.edge_attr.dtype)
        return torch.cat([torch.cat(forward(batch.get_example(g), probe, all_layers=True, check=False), dim=-1).t()
                          for g in range(batch.num_graphs)])

    def _node_embedding_uniform(self, sizes: Tuple[int, ...]) -> Tensor:
        """``[N_g, D]`` position embeddings of one architecture's nodes."""
        parts = [self.input_embed.weight]
        for l in range(1, len(sizes) - 1):
            parts.append(self.hidden_layer_embed.weight[l].expand(sizes[l], -1))
        parts.append(self.output_embed.weight)
        return torch.cat(parts)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Union[Data, Batch], *, path: str = 'auto') -> Tensor:
        """Embeds every graph of ``batch``: returns ``[B, out_dim]``.

        Args:
            batch: a :class:`~torch_geometric.data.Batch` of parameter graphs
                (or one :class:`~torch_geometric.data.Data`).
            path: ``'auto'`` (block path for uniform batches, else scatter),
                ``'sparse'`` (always scatter) or ``'dense'`` (dense padded
                ``[B, N, N, D]`` edge tensors; the benchmark's baseline,
                uniform batches and ``'mean'``/``'sum'`` only).
        """
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        sizes_all = self.check(batch)
        batch = self._canonical(batch)
        uniform = all(s == sizes_all[0] for s in sizes_all)
        if path == 'auto':
            path = 'blocks' if uniform else 'sparse'
        if path in ('blocks', 'dense'):
            if not uniform:
                raise ValueError(f"path={path!r} needs graphs of one architecture, got {sorted(set(sizes_all))}")
            if path == 'dense' and self.aggr not in ('mean', 'sum'):
                raise ValueError(f"path='dense' supports aggr 'mean' and 'sum' only, got {self.aggr!r}")
            return self._forward_uniform(batch, sizes_all[0], dense=path == 'dense')
        if path != 'sparse':
            raise ValueError(f"path must be 'auto', 'sparse', 'blocks' or 'dense', got {path!r}")
        return self._forward_sparse(batch)

    def _readout(self, node_mean: Tensor, edge_mean: Tensor, inputs: Tensor, outputs: Tensor) -> Tensor:
        B = node_mean.size(0)
        z = torch.cat([node_mean, edge_mean, inputs.reshape(B, -1), outputs.reshape(B, -1)], dim=-1)
        return self.readout(self.readout_norm(z))

    def _forward_uniform(self, batch: Batch, sizes: Tuple[int, ...], dense: bool) -> Tensor:
        B, De = batch.num_graphs, self.edge_hidden
        node_off, edge_off = layer_offsets(sizes)
        Ng, Eg = node_off[-1], edge_off[-1]
        layer_of_node = batch.layer[:Ng]                      # the same for every graph
        x = (batch.x.view(B, Ng, -1) - self.node_shift[layer_of_node]) / self.node_scale[layer_of_node]
        if self.probe_points:
            x = torch.cat([x, self._probe_uniform(batch)], dim=-1)
        h = self.node_embed(x) + self._node_embedding_uniform(sizes)
        ea = batch.edge_attr.view(B, Eg, -1)
        in_deg, out_deg = (d.to(h.device, h.dtype) for d in _degrees(sizes))
        e = [self._edge_inputs((ea[:, edge_off[l]:edge_off[l + 1]] - self.edge_shift[l]) / self.edge_scale[l])
             .view(B, sizes[l + 1], sizes[l], De)
             + self.edge_layer_embed.weight[l] for l in range(len(sizes) - 1)]
        if dense:
            h, e_dense, mask = h, *self._to_dense(e, sizes)
            for layer in self.layers:
                h, e_dense = layer.forward_dense(h, e_dense, mask, in_deg, out_deg)
            edge_mean = e_dense.sum((1, 2)) / Eg
        else:
            for layer in self.layers:
                h, e = layer.forward_blocks(h, e, sizes, in_deg, out_deg)
            edge_mean = sum(e_l.sum((1, 2)) for e_l in e) / Eg
        return self._readout(h.mean(1), edge_mean, h[:, :sizes[0]], h[:, Ng - sizes[-1]:])

    @staticmethod
    def _to_dense(e: List[Tensor], sizes: Tuple[int, ...]) -> Tuple[Tensor, Tensor]:
        """Scatters the edge blocks into a padded ``[B, N, N, D]`` adjacency tensor."""
        node_off, _ = layer_offsets(sizes)
        B, D, N = e[0].size(0), e[0].size(-1), node_off[-1]
        dense = e[0].new_zeros(B, N, N, D)
        mask = torch.zeros(N, N, dtype=torch.bool, device=e[0].device)
        for l, e_l in enumerate(e):
            rows, cols = slice(node_off[l], node_off[l + 1]), slice(node_off[l + 1], node_off[l + 2])
            dense[:, rows, cols] = e_l.transpose(1, 2)         # [B, d_l, d_{l+1}, D]: u -> v
            mask[rows, cols] = True
        return dense, mask.expand(B, N, N)

    def _forward_sparse(self, batch: Batch) -> Tensor:
        N, B = batch.num_nodes, batch.num_graphs
        src, dst = batch.edge_index
        node_batch = batch.batch
        ptr = batch.ptr
        layer = batch.layer
        local = torch.arange(N, device=layer.device) - ptr[node_batch]
        last = scatter(layer, node_batch, dim=0, dim_size=B, reduce='max')[node_batch]
        is_in, is_out = layer == 0, layer == last
        counts = (ptr[1:] - ptr[:-1])[node_batch]
        # Position embeddings: hidden-layer embedding, or the unique one of an
        # input / output neuron (inputs are first, outputs last in each graph).
        pos = self.hidden_layer_embed(layer.clamp(max=self.max_layers - 1))
        pos = torch.where(is_in.unsqueeze(-1), self.input_embed(local.clamp(max=self.in_features - 1)), pos)
        out_idx = (local - (counts - self.out_features)).clamp(min=0, max=self.out_features - 1)
        pos = torch.where(is_out.unsqueeze(-1), self.output_embed(out_idx), pos)
        lay = layer.clamp(max=self.max_layers)
        x = (batch.x - self.node_shift[lay]) / self.node_scale[lay]
        if self.probe_points:
            x = torch.cat([x, self._probe_sparse(batch)], dim=-1)
        h = self.node_embed(x) + pos
        edge_layer = layer.index_select(0, src).clamp(max=self.max_layers - 1)
        e = self._edge_inputs((batch.edge_attr - self.edge_shift[edge_layer]) / self.edge_scale[edge_layer])
        e = e + self.edge_layer_embed(edge_layer)
        ones = torch.ones_like(src, dtype=h.dtype)
        in_deg = scatter(ones, dst, dim=0, dim_size=N, reduce='sum')
        out_deg = scatter(ones, src, dim=0, dim_size=N, reduce='sum')
        for l in self.layers:
            h, e = l.forward_sparse(h, e, src, dst, in_deg, out_deg)
        node_mean = scatter(h, node_batch, dim=0, dim_size=B, reduce='mean')
        edge_mean = scatter(e, node_batch.index_select(0, src), dim=0, dim_size=B, reduce='mean')
        return self._readout(node_mean, edge_mean, h[is_in].view(B, -1), h[is_out].view(B, -1))

    # ------------------------------------------------------------------ cost
    def linear_flops(self, layer_sizes: Sequence[int]) -> int:
        """Forward FLOPs (2 per multiply-add) of the encoder's linear layers on
        one graph of these layer sizes, as the block path computes them."""
        N, E = sum(layer_sizes), sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
        D, De = self.hidden, self.edge_hidden
        edge_in = self.fourier.out_channels if self.fourier is not None else self.edge_channels
        macs = E * edge_in * De + N * (self.node_channels + self.probe_points) * D
        # per edge: W_e, W_o; per node: [W_s|W_t], W_->, W_<-, node MLP (3D->2D->D)
        k = len(parse_aggr(self.aggr))
        per_layer = E * 2 * De * De + N * (2 * D * De + 2 * k * De * D + 3 * D * 2 * D + 2 * D * D)
        macs += self.num_layers * per_layer
        macs += ((1 + self.in_features + self.out_features) * D + De) * self.out_dim
        return 2 * macs
