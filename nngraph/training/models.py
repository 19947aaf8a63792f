"""Models: the classifier or encoder that ``model.name`` names, its input
standardisation fitted on training graphs, and the SimCLR wrapper."""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from nngraph.models import (AlignedMLPEncoder, EncoderClassifier, FlatMLPClassifier, FlatMLPEncoder, GNNEncoder,
                            GraphClassifier, ProjectionHead, SignGNNClassifier, SignGNNEncoder, StatNNEncoder)
from nngraph.models.classifier import EncoderRegressor
from nngraph.transforms._base import require_finite

__all__ = ['MODELS', 'build_model', 'training_module', 'build_encoder', 'encoder_kwargs', 'fit_normalization',
           'ContrastiveModel']

#: The values of ``model.name``: the GNN, DWSNets' calibration baselines
#: (flat MLP on the raw weights, StatNN on weight statistics, flat MLP on
#: weights aligned to one reference network) and the sign-equivariant GNN for
#: odd activations (one architecture per run; sized by ``model.hidden``,
#: ``edge_hidden``, ``layers``, ``out_dim``, ``dropout``, ``aggr``). The
#: baselines' MLP is sized by ``model.flat_hidden`` and ``model.flat_layers``.
MODELS = ('gnn', 'flat', 'statnn', 'aligned_mlp', 'sign_gnn')


def build_model(config: Dict[str, Any], num_classes: int, layer_sizes: Sequence[int], *,
                regression: bool = False, architectures: Optional[Sequence[Sequence[int]]] = None) -> nn.Module:
    """The classifier of ``model`` for networks of ``layer_sizes``; with
    ``regression`` an :class:`~nngraph.models.classifier.EncoderRegressor`
    (one output in the target's units; ``num_classes`` is then the task's
    class count, which the GNN reads as the networks' output width).
    ``architectures`` lists every architecture the model will read when they
    differ (a model zoo; see :func:`build_encoder`)."""
    m = config['model']
    if regression:
        return EncoderRegressor(build_encoder(config, layer_sizes, architectures),
                                relu=m['name'] in ('gnn', 'sign_gnn'))
    if m['name'] == 'gnn':
        return GraphClassifier(num_classes, **encoder_kwargs(config, layer_sizes, architectures))
    if m['name'] == 'sign_gnn':
        return SignGNNClassifier(num_classes, **_sign_gnn_kwargs(config, layer_sizes, architectures))
    if m['name'] == 'flat':
        _one_architecture(m['name'], layer_sizes, architectures)
        return FlatMLPClassifier(num_classes, layer_sizes, hidden=m['flat_hidden'],
                                 layers=m['flat_layers'], dropout=m['dropout'])
    return EncoderClassifier(build_encoder(config, layer_sizes, architectures), num_classes)


def build_encoder(config: Dict[str, Any], layer_sizes: Sequence[int],
                  architectures: Optional[Sequence[Sequence[int]]] = None) -> nn.Module:
    """The encoder of ``model`` alone (contrastive pretraining, probes,
    regression). ``architectures``: every architecture it will read, when
    they differ (default: ``layer_sizes`` only). The GNN reads any mix; StatNN
    reads mixed depths through padded layer slots; the flat and aligned MLPs
    read one architecture and refuse a mix, naming it."""
    m = config['model']
    mlp = dict(hidden=m['flat_hidden'], layers=m['flat_layers'], dropout=m['dropout'])
    if m['name'] == 'flat':
        _one_architecture(m['name'], layer_sizes, architectures)
        return FlatMLPEncoder(layer_sizes, **mlp)
    if m['name'] == 'statnn':
        depths = {len(a) - 1 for a in (architectures or [layer_sizes])}
        if len(depths) > 1:
            return StatNNEncoder(max(depths), variable_depth=True, **mlp)
        return StatNNEncoder(len(layer_sizes) - 1, **mlp)
    if m['name'] == 'aligned_mlp':
        _one_architecture(m['name'], layer_sizes, architectures)
        return AlignedMLPEncoder(layer_sizes, signs=m['align_signs'], **mlp)
    if m['name'] == 'gnn':
        return GNNEncoder(**encoder_kwargs(config, layer_sizes, architectures))
    if m['name'] == 'sign_gnn':
        return SignGNNEncoder(**_sign_gnn_kwargs(config, layer_sizes, architectures))
    raise ValueError(f"model.name must be one of {MODELS}, got {m['name']!r}")


def _one_architecture(name: str, layer_sizes: Sequence[int],
                      architectures: Optional[Sequence[Sequence[int]]]) -> None:
    # A model over the flat parameter vector has one input layout: a mix of
    # architectures is the user's choice of data, named here before training.
    found = sorted({tuple(int(d) for d in a) for a in (architectures or [layer_sizes])})
    if len(found) > 1:
        shown = ', '.join(str(list(a)) for a in found[:4]) + (', ...' if len(found) > 4 else '')
        raise ValueError(f"model.name {name!r} reads networks of one architecture, but the data holds "
                         f'{len(found)} ({shown}); select one with data.architecture (e.g. '
                         f"data.architecture={list(found[0])}), or use model.name 'gnn' or 'statnn'")


def encoder_kwargs(config: Dict[str, Any], layer_sizes: Sequence[int],
                   architectures: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Any]:
    """The :class:`GNNEncoder` arguments of ``model`` for networks of
    ``layer_sizes`` (input and output widths; every architecture of a mix
    shares them), deep enough for the deepest of ``architectures``."""
    m = config['model']
    kwargs = dict(in_features=layer_sizes[0], out_features=layer_sizes[-1], hidden=m['hidden'],
                  edge_hidden=m['edge_hidden'], layers=m['layers'], out_dim=m['out_dim'],
                  dropout=m['dropout'], aggr=m['aggr'], fourier_features=m['fourier_features'],
                  fourier_scale=m['fourier_scale'], probe_points=m['probe_points'],
                  canonical_signs=m['canonical_signs'], fold_siren_bias=m['fold_siren_bias'])
    deepest = max(len(a) - 1 for a in (architectures or [layer_sizes]))
    if deepest > _GNN_MAX_LAYERS:       # the encoder's default otherwise: same parameters as before
        kwargs['max_layers'] = deepest
    return kwargs


_GNN_MAX_LAYERS = 16    # GNNEncoder's default max_layers


def _sign_gnn_kwargs(config: Dict[str, Any], layer_sizes: Sequence[int],
                     architectures: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Any]:
    # The GNN's size keys; its input options (Fourier features, probes,
    # canonical signs, the bias fold) are the GNN's and are not read here.
    _one_architecture('sign_gnn', layer_sizes, architectures)
    m = config['model']
    return dict(in_features=layer_sizes[0], out_features=layer_sizes[-1], hidden=m['hidden'],
                edge_hidden=m['edge_hidden'], layers=m['layers'], out_dim=m['out_dim'], dropout=m['dropout'],
                aggr=m['aggr'], max_layers=max(_GNN_MAX_LAYERS, len(layer_sizes) - 1))


def training_module(model: nn.Module, config: Dict[str, Any], distributed: bool) -> nn.Module:
    """The module the training forward goes through: ``model`` wrapped in
    DDP when ``distributed``, then ``torch.compile``d when the config's
    ``compile`` is true. Both share ``model``'s parameters, so optimizers,
    checkpoints and ``load_state_dict`` keep using ``model`` (state-dict keys
    unchanged). Evaluation runs ``model`` itself: DDP's forward syncs buffers
    across ranks (sharded splits may give ranks different batch counts), and
    eval batches change size (dynamo's dynamic-shape recompilation crashed on
    them after a resume), while training batches keep one size."""
    module = nn.parallel.DistributedDataParallel(model) if distributed else model
    if not config['compile']:
        return module
    # Dynamo traces through functools.lru_cache and warns that the cache could
    # hide state; ours (layer offsets, degrees, sizes) are pure functions of the
    # layer sizes, which it sees as constants, so the warning carries no news.
    warnings.filterwarnings('ignore', message=r'Dynamo detected a call to a `functools.lru_cache`')
    return torch.compile(module)


def fit_normalization(model: nn.Module, dataset, max_graphs: int = 1024) -> None:
    """Fits the encoder's input standardisation on the first ``max_graphs``
    graphs of ``dataset`` (untransformed; the same on every process). The
    aligned baseline also takes the first of them as its reference network.

    Raises:
        ValueError: a graph holding a NaN or infinity, naming its index in
            ``dataset``: one such graph would make every shift and scale, and
            so every later output, NaN.
    """
    encoder = model if hasattr(model, 'fit_normalization') else getattr(model, 'encoder', None)
    if encoder is None or not hasattr(encoder, 'fit_normalization'):
        return
    n = min(len(dataset), max_graphs)
    batch = Batch.from_data_list([dataset[i] for i in range(n)])
    require_finite(batch, f'fit_normalization on dataset items 0-{n - 1} (graph i is item i)')
    encoder.fit_normalization(batch)


class ContrastiveModel(nn.Module):
    """Encoder + SimCLR projection head; ``forward`` returns projections."""

    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.out_dim, projection_dim)

    def forward(self, batch: Batch) -> Tensor:
        return self.head(self.encoder(batch))
