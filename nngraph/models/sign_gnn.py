r"""A sign-equivariant GNN encoder for networks with odd activations (sine,
tanh): invariant to hidden-neuron sign flips by construction, with no
canonical sign chosen first.

A hidden neuron :math:`v` with sign :math:`s_v \in \{\pm 1\}` maps its bias,
incoming row and outgoing column to :math:`s_v` times each, so an edge
:math:`u \to v` carries :math:`s_u s_v w_{uv}` (input and output neurons have
:math:`s = 1`). Every state is either *odd* (it transforms like that) or *even*
(invariant):

* node :math:`v`: odd channels :math:`o_v` (start: :math:`b_v` times a learned
  vector of its layer) and even channels :math:`h_v` (start: the position
  embedding: one per hidden layer, one per input and output neuron);
* edge :math:`uv`: odd channels :math:`e_{uv}` (start: :math:`w_{uv}` times a
  learned vector of its weight layer).

Only three kinds of operation touch odd values, and each keeps the rule:
linear maps *without bias* (:math:`s_v` is one scalar for all of a neuron's
channels), products odd :math:`\times` even (gates), and products of two odd
values whose signs cancel (invariants: :math:`o_v \odot A o_v`,
:math:`e_{uv} \odot p_u \odot q_v`, :math:`e_{uv} \odot e_{uv}`; the readout's :math:`|o|`, :math:`|e|`).
A layer (pre-norm, residual; :math:`\tilde o = o / \sqrt{1 + \overline{o^2}}`
is an odd norm that keeps magnitudes):

.. math::
    g_{uv} &= \mathrm{ReLU}\big(W_g[\tilde e_{uv} \odot p_u \odot q_v,\ \tilde e_{uv} \odot \tilde e_{uv}]
              + S \bar h_u + T \bar h_v + c\big) \quad\text{(invariant)}\\
    e_{uv} &\leftarrow e_{uv} + e_{uv} \odot G g_{uv} + a_u \odot b_v \\
    m_v &= W_m\big[\operatorname{mean}_{u \to v} \tilde e_{uv} \odot f_u,\
            \operatorname{mean}_{v \to w} \tilde e_{vw} \odot r_w\big] \quad\text{(odd in } s_v)\\
    z_v &= \mathrm{ReLU}\,U\big[\bar h_v, \operatorname{aggr}_{u \to v} g_{uv},
          \operatorname{aggr}_{v \to w} g_{vw}, \tilde o_v \odot A \tilde o_v, \tilde o_v \odot m_v,
          [v \text{ input/output}]\,\tilde o_v\big] \\
    h_v &\leftarrow h_v + H z_v, \qquad o_v \leftarrow o_v + O[\tilde o_v, m_v] \odot Z z_v

with :math:`p, q, a, b, f, r` bias-free linear maps of :math:`\tilde o`.
``aggr`` (mean, sum, max) applies to the invariant :math:`g`; odd messages are
averaged (or summed), never maxed (the max of odd values is not odd). Input and
output neurons never flip, so their odd channels are also read as invariants
(the last term of :math:`z`); for hidden neurons that term is exactly zero.
Readout (invariant): the mean over hidden neurons of :math:`[h, |o|]`, the
input and output neurons' :math:`[h, o]` in their order and the mean over
edges of :math:`|e|`, LayerNorm, linear.

A flip multiplies values by :math:`\pm 1`, which is exact in floating point
and leaves every sum in the same order, so a flipped network embeds to the same
bits (tested). Batches must hold one architecture: each weight layer is a dense
``[B, d_{l+1}, d_l, C]`` block (canonical order, ``DESIGN.md``).
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from nngraph import activations as A
from nngraph.graph import activations, layer_offsets, validate
from nngraph.models.classifier import GraphClassifier
from nngraph.models.encoder import parse_aggr
from nngraph.transforms._base import require_finite_eager

__all__ = ['SignGNNEncoder', 'SignGNNLayer', 'SignGNNClassifier', 'OddNorm']


class OddNorm(nn.Module):
    r""":math:`x \odot \gamma / \sqrt{1 + \operatorname{mean}_c x_c^2}` over the
    last dimension: odd in :math:`x` (a LayerNorm's shift would break that)
    and, unlike an RMS norm, it keeps a small state's magnitude.

    Args:
        dim (int): channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(1 + x.square().mean(-1, keepdim=True)) * self.weight


def _aggregate(x: Tensor, dim: int, aggrs: Tuple[str, ...]) -> Tensor:
    """The aggregators over ``dim``, concatenated along the channels."""
    return torch.cat([x.mean(dim) if a == 'mean' else x.sum(dim) if a == 'sum' else x.amax(dim) for a in aggrs], -1)


def _src(x: Tensor, nodes: slice) -> Tensor:
    """Node states ``[B, N_g, C]`` of one layer at the source of each of its
    outgoing edges: ``[B, 1, d_l, C]``."""
    return x[:, nodes].unsqueeze(1)


def _dst(x: Tensor, nodes: slice) -> Tensor:
    """Node states of one layer at the target of each incoming edge: ``[B, d_{l+1}, 1, C]``."""
    return x[:, nodes].unsqueeze(2)


class SignGNNLayer(nn.Module):
    r"""One layer of :class:`SignGNNEncoder` (the math is in the module
    docstring): updates odd edge states, odd and even node states.

    Args:
        hidden (int): node width :math:`D` (odd and even channels each).
        edge_hidden (int): edge width.
        aggr (str): aggregators of the invariant edge messages
            (``'mean'``, ``'sum'``, ``'max'``, or several comma-separated);
            the odd messages use those of them that are not ``'max'``
            (``'mean'`` if none).
        dropout (float): dropout on the invariant edge messages and the node
            update's hidden layer.
    """

    def __init__(self, hidden: int, edge_hidden: int, aggr: str = 'mean', dropout: float = 0.0) -> None:
        super().__init__()
        D, De = hidden, edge_hidden
        self.aggrs = parse_aggr(aggr)
        self.odd_aggrs = tuple(a for a in self.aggrs if a != 'max') or ('mean',)
        k, ko = len(self.aggrs), len(self.odd_aggrs)
        self.node_norm, self.odd_norm, self.edge_norm = nn.LayerNorm(D), OddNorm(D), OddNorm(De)
        self.odd_terms = nn.Linear(D, 6 * De, bias=False)       # p, q, a, b, f, r: odd
        self.even_terms = nn.Linear(D, 2 * De)                  # S, T (and c): invariant
        self.edge_in = nn.Linear(2 * De, De, bias=False)        # W_g
        self.edge_gate = nn.Linear(De, De)                      # G
        self.odd_msg = nn.Linear(2 * ko * De, D, bias=False)    # W_m
        self.odd_pair = nn.Linear(D, D, bias=False)             # A
        self.update = nn.Linear(4 * D + 2 * k * De, 2 * D)      # U
        self.even_out = nn.Linear(2 * D, D)                     # H
        self.gate_out = nn.Linear(2 * D, D)                     # Z
        self.odd_out = nn.Linear(2 * D, D, bias=False)          # O
        self.drop = nn.Dropout(dropout)

    def forward(self, o: Tensor, h: Tensor, e: List[Tensor], sizes: Tuple[int, ...],
                io: Tensor) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """``o``, ``h``: ``[B, N_g, D]``; ``e[l]``: ``[B, d_{l+1}, d_l, De]``;
        ``io``: bool ``[N_g, 1]``, true on input and output neurons."""
        node_off, _ = layer_offsets(sizes)
        on, hn = self.odd_norm(o), self.node_norm(h)
        p, q, a, b, f, r = self.odd_terms(on).chunk(6, dim=-1)
        s, t = self.even_terms(hn).chunk(2, dim=-1)
        new_e, fwd, rev, fwd_odd, rev_odd = [], [], [], [], []
        for l, e_l in enumerate(e):
            u, v = slice(node_off[l], node_off[l + 1]), slice(node_off[l + 1], node_off[l + 2])
            en = self.edge_norm(e_l)
            inv = torch.cat([en * _src(p, u) * _dst(q, v), en * en], dim=-1)     # s_u s_v cancels
            g = self.drop(F.relu(self.edge_in(inv) + _src(s, u) + _dst(t, v)))
            e_l = e_l + e_l * self.edge_gate(g) + _src(a, u) * _dst(b, v)
            en = self.edge_norm(e_l)
            new_e.append(e_l)
            fwd.append(_aggregate(g, 2, self.aggrs))                          # into layer l+1
            rev.append(_aggregate(g, 1, self.aggrs))                          # into layer l
            fwd_odd.append(_aggregate(en * _src(f, u), 2, self.odd_aggrs))    # odd in s_v
            rev_odd.append(_aggregate(en * _dst(r, v), 1, self.odd_aggrs))    # odd in s_u
        B = o.size(0)

        def nodes(into_next: List[Tensor], into_prev: List[Tensor]) -> Tuple[Tensor, Tensor]:
            # messages of each weight layer, placed at their nodes: inputs get
            # no forward message, outputs no backward one
            first = into_next[0].new_zeros(B, sizes[0], into_next[0].size(-1))
            last = into_prev[0].new_zeros(B, sizes[-1], into_prev[0].size(-1))
            return torch.cat([first] + into_next, dim=1), torch.cat(into_prev + [last], dim=1)

        fwd, rev = nodes(fwd, rev)
        fwd_odd, rev_odd = nodes(fwd_odd, rev_odd)
        m = self.odd_msg(torch.cat([fwd_odd, rev_odd], dim=-1))                   # odd
        io_odd = torch.where(io, on, torch.zeros((), dtype=on.dtype, device=on.device))
        z = torch.cat([hn, fwd, rev, on * self.odd_pair(on), on * m, io_odd], dim=-1)   # invariant
        z = self.drop(F.relu(self.update(z)))
        h = h + self.even_out(z)
        o = o + self.odd_out(torch.cat([on, m], dim=-1)) * self.gate_out(z)
        return o, h, new_e


class SignGNNEncoder(nn.Module):
    r"""GNN encoder of parameter graphs of networks with an odd activation,
    invariant to hidden-neuron permutations and to hidden-neuron sign flips
    (exactly, bit for bit): odd and even states, see the module docstring.
    Same interface as :class:`~nngraph.models.GNNEncoder` (``forward``,
    ``check``, ``fit_normalization``, ``out_dim``), on batches of one
    architecture.

    Args:
        in_features (int): input width :math:`d_0` of the encoded networks.
        out_features (int): output width :math:`d_L` of the encoded networks.
        hidden (int): node width :math:`D` (odd and even channels each).
        edge_hidden (int): edge width (``None``: ``hidden``).
        layers (int): number of :class:`SignGNNLayer`.
        out_dim (int): embedding size (``None``: ``hidden``).
        dropout (float): dropout inside the layers.
        aggr (str): aggregators of the invariant messages (see
            :class:`SignGNNLayer`).
        node_channels (int): channels of ``x`` (1 for a plain bias).
        edge_channels (int): channels of ``edge_attr``.
        max_layers (int): largest number of weight layers of an encoded network.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 64, layers: int = 4,
                 out_dim: Optional[int] = None, dropout: float = 0.0, aggr: str = 'mean',
                 edge_hidden: Optional[int] = None, node_channels: int = 1, edge_channels: int = 1,
                 max_layers: int = 16) -> None:
        super().__init__()
        for name, value in (('in_features', in_features), ('out_features', out_features), ('hidden', hidden),
                            ('layers', layers), ('max_layers', max_layers), ('node_channels', node_channels),
                            ('edge_channels', edge_channels)):
            if int(value) < 1:
                raise ValueError(f'{name} must be a positive integer, got {value}')
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.hidden, self.num_layers, self.max_layers = int(hidden), int(layers), int(max_layers)
        self.out_dim = int(out_dim) if out_dim is not None else self.hidden
        self.node_channels, self.edge_channels = int(node_channels), int(edge_channels)
        self.aggr = ','.join(parse_aggr(aggr))
        D = self.hidden
        De = self.edge_hidden = int(edge_hidden) if edge_hidden else D
        # Per-layer scale of weights and biases, no shift: a shift would make
        # -w and w differ by more than a sign. Identity until fit_normalization.
        self.register_buffer('edge_scale', torch.ones(self.max_layers, self.edge_channels))
        self.register_buffer('node_scale', torch.ones(self.max_layers + 1, self.node_channels))
        # Bias-free linear maps of the raw values, one per layer: the odd states
        # start as b_v (resp. w_uv) times a learned vector of their layer.
        self.node_in = nn.Parameter(torch.randn(self.max_layers + 1, self.node_channels, D) / self.node_channels ** 0.5)
        self.edge_in = nn.Parameter(torch.randn(self.max_layers, self.edge_channels, De) / self.edge_channels ** 0.5)
        self.hidden_layer_embed = nn.Embedding(self.max_layers, D)   # index = layer (1..L-1)
        self.input_embed = nn.Embedding(self.in_features, D)
        self.output_embed = nn.Embedding(self.out_features, D)
        self.layers = nn.ModuleList(SignGNNLayer(D, De, aggr, dropout) for _ in range(self.num_layers))
        width = 2 * D + De + (self.in_features + self.out_features) * 2 * D
        self.readout_norm = nn.LayerNorm(width)
        self.readout = nn.Linear(width, self.out_dim)

    @torch.compiler.disable
    def check(self, batch: Union[Data, Batch]) -> List[Tuple[int, ...]]:
        """Raises ``ValueError`` if some graph does not fit the encoder (its
        widths or channels, a mix of architectures, an activation that is not
        odd) or holds a NaN or infinity; returns the layer sizes of every graph."""
        sizes = validate(batch)   # edge_index is read here: refuse hand-edited edges
        name = type(self).__name__
        for field, channels in (('x', self.node_channels), ('edge_attr', self.edge_channels)):
            t = getattr(batch, field)
            if t.dim() != 2 or t.size(-1) != channels:
                raise ValueError(f'{name} built for {field} with {channels} channel(s), got shape {tuple(t.shape)}')
        for i, s in enumerate(sizes):
            if s[0] != self.in_features or s[-1] != self.out_features or len(s) - 1 > self.max_layers:
                raise ValueError(f'graph {i} has layer sizes {s}, but the {name} was built for networks with '
                                 f'{self.in_features} inputs, {self.out_features} outputs and at most '
                                 f'{self.max_layers} weight layers')
        if any(s != sizes[0] for s in sizes):
            raise ValueError(f'{name} reads batches of one architecture, got layer sizes {sorted(set(sizes))}; '
                             f"batch networks of one architecture, or use GNNEncoder (model.name 'gnn')")
        for act in set(activations(batch)):
            try:
                A.require(act, len(sizes[0]) - 1, 'odd', name)
            except ValueError as err:
                raise ValueError(f"{err}: its hidden neurons do not have the sign-flip symmetry {name} is built "
                                 f"on; use GNNEncoder (model.name 'gnn')") from None
        require_finite_eager(batch, name)
        return sizes

    @torch.no_grad()
    def fit_normalization(self, batch: Union[Data, Batch]) -> None:
        r"""Sets the per-layer scales from a sample of graphs: weights of
        weight layer :math:`l` become :math:`w / \sqrt{\overline{w^2}}`, biases
        of node layer :math:`l \ge 1` likewise (root mean square over all
        graphs, neurons and channels of the sample, no mean subtracted, so a
        sign flip stays a sign flip). Stored as buffers, saved with the model."""
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        sizes = self.check(batch)[0]
        node_off, edge_off = layer_offsets(sizes)
        B = batch.num_graphs
        x, ea = batch.x.view(B, node_off[-1], -1), batch.edge_attr.view(B, edge_off[-1], -1)
        rms = lambda t: t.square().mean((0, 1)).sqrt().clamp(min=1e-8)      # noqa: E731
        for l in range(len(sizes) - 1):
            self.edge_scale[l] = rms(ea[:, edge_off[l]:edge_off[l + 1]])
            self.node_scale[l + 1] = rms(x[:, node_off[l + 1]:node_off[l + 2]])

    def forward(self, batch: Union[Data, Batch]) -> Tensor:
        """Embeds every graph of ``batch`` (one architecture): ``[B, out_dim]``."""
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        sizes = self.check(batch)[0]
        B, L = batch.num_graphs, len(sizes) - 1
        node_off, edge_off = layer_offsets(sizes)
        Ng, Eg, d0, dL = node_off[-1], edge_off[-1], sizes[0], sizes[-1]
        layer = batch.layer[:Ng]                                        # the same for every graph
        x = batch.x.view(B, Ng, -1) / self.node_scale[layer]
        o = torch.einsum('bnc,ncd->bnd', x, self.node_in[layer])     # odd: b_v times its layer's vector
        h = torch.cat([self.input_embed.weight]
                      + [self.hidden_layer_embed.weight[l].expand(sizes[l], -1) for l in range(1, L)]
                      + [self.output_embed.weight]).expand(B, -1, -1)
        ea = batch.edge_attr.view(B, Eg, -1)
        e = [(ea[:, edge_off[l]:edge_off[l + 1]] / self.edge_scale[l]).matmul(self.edge_in[l])
             .view(B, sizes[l + 1], sizes[l], self.edge_hidden) for l in range(L)]
        io = (layer == 0) | (layer == L)
        for mp in self.layers:
            o, h, e = mp(o, h, e, sizes, io.unsqueeze(-1))
        # readout: invariant features only ([h, o] of inputs and outputs: they never flip)
        hidden = torch.cat([h[:, d0:Ng - dL], o[:, d0:Ng - dL].abs()], dim=-1).sum(1) / max(Ng - d0 - dL, 1)
        edges = sum(e_l.abs().sum((1, 2)) for e_l in e) / Eg
        ends = torch.cat([h, o], dim=-1)
        z = torch.cat([hidden, edges, ends[:, :d0].reshape(B, -1), ends[:, Ng - dL:].reshape(B, -1)], dim=-1)
        return self.readout(self.readout_norm(z))


class SignGNNClassifier(GraphClassifier):
    r"""A :class:`SignGNNEncoder` followed by a linear head, as
    :class:`~nngraph.models.GraphClassifier` is for the GNN:
    :math:`\mathrm{logits} = W\,\mathrm{ReLU}(\mathrm{enc}(G)) + b`.

    Args:
        num_classes (int): number of classes :math:`K`.
        **encoder_kwargs: arguments of :class:`SignGNNEncoder`.
    """

    encoder_class = SignGNNEncoder
