"""The loops ``train.py`` drives: configuration, data, models, supervised
training, SimCLR contrastive pretraining and the linear probe, on one process
or several (``torchrun``, DistributedDataParallel).

A run is a plain nested dict (:data:`DEFAULTS` lists every key); it writes
``<out_dir>/<name>/`` with ``config.yaml``, ``metrics.json``,
``checkpoint.pt`` and ``curves.png``. Everything here is library code: the
command line in ``train.py`` is a thin reader over it.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform, Compose
from tqdm.auto import tqdm

from nngraph._atomic import atomic_path
from nngraph.models import FlatMLPClassifier, FlatMLPEncoder, GNNEncoder, GraphClassifier, ProjectionHead

__all__ = [
    'DEFAULTS', 'MODES', 'load_config', 'merge_config', 'apply_overrides', 'soft_cross_entropy',
    'nt_xent', 'build_transforms', 'build_datasets', 'build_model', 'build_encoder', 'warmup_cosine', 'Distributed',
    'run', 'RunExistsError', 'toy_dataset',
]

MODES = ('supervised', 'contrastive', 'probe', 'contrastive+probe')

#: Every key a config may set, with its default. A config file overrides a
#: subset; anything not listed here is an error that names the valid keys.
DEFAULTS: Dict[str, Any] = {
    'name': None,               # run folder name (default: the config file's stem)
    'out_dir': 'runs',
    'seed': 0,
    'mode': 'supervised',       # supervised | contrastive | probe | contrastive+probe
    'device': 'auto',           # auto | cpu | cuda
    'data': {
        'source': 'digits',     # digits (built if absent) | inr (a built INRGraphDataset folder) | toy
        'root': 'data/digits',
        'format': 'auto',       # source inr: auto | nngraph | dwsnets | neural-graphs | nfn
        'build_views': 1,       # views fitted per training object when building
        'views': 1,             # views per training object used for training
        'limit': None,          # build from the first `limit` images only
        'objects_per_class': None,  # train on the first k training objects of each class only
        'samples_per_epoch': None,  # graphs drawn per epoch (None: one pass over the training split)
        'batch_size': 64,
        'eval_batch_size': 256,
        'num_workers': 0,
    },
    'transforms': [],           # list of names or {Name: {arg: value}}; see nngraph.transforms
    'model': {
        'name': 'gnn',          # gnn | flat
        'hidden': 64,
        'edge_hidden': 32,
        'layers': 3,
        'out_dim': 64,
        'dropout': 0.0,
        'aggr': 'mean',
        'fourier_features': 0,
        'fourier_scale': 10.0,
        'probe_points': 0,      # neuron activations at P fixed inputs as node features
        'flat_hidden': 256,     # flat baseline only
        'flat_layers': 2,
    },
    'optim': {
        'epochs': 10,
        'lr': 1.0e-3,
        'weight_decay': 1.0e-4,
        'warmup_epochs': 1,
        'grad_clip': 1.0,
    },
    'contrastive': {
        'temperature': 0.1,
        'projection_dim': 64,
    },
    'probe': {
        'checkpoint': None,     # mode probe: a run folder or checkpoint.pt of a contrastive run
        'C': [0.01, 0.1, 1.0, 10.0],   # inverse L2 strengths tried, chosen on validation
    },
}


class RunExistsError(RuntimeError):
    """The run folder already holds a run (pass ``resume`` or ``overwrite``)."""


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #

def merge_config(base: Dict[str, Any], update: Dict[str, Any], where: str = '') -> Dict[str, Any]:
    """``base`` deep-updated with ``update``; every key of ``update`` must
    exist in ``base`` (``ValueError`` naming the key and the valid ones)."""
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise ValueError(f"config{' section ' + repr(where) if where else ''} must be a mapping, "
                         f'got {type(update).__name__}')
    for key, value in update.items():
        path = f'{where}.{key}' if where else str(key)
        if key not in base:
            raise ValueError(f'unknown config key {path!r}; valid keys'
                             f"{' of ' + repr(where) if where else ''}: {sorted(base)}")
        if isinstance(base[key], dict):
            out[key] = merge_config(base[key], value, path)
        else:
            out[key] = value
    return out


def apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Applies command-line overrides ``key.sub=value`` (value read as YAML,
    so ``optim.lr=3e-4``, ``transforms=[RandomSignFlip]`` work)."""
    update: Dict[str, Any] = {}
    for item in overrides:
        if '=' not in item:
            raise ValueError(f'override {item!r} must look like key.sub=value')
        key, raw = item.split('=', 1)
        value = _parse_value(raw)
        node = update
        parts = key.split('.')
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return merge_config(config, update)


def _parse_value(raw: str) -> Any:
    # YAML 1.1 reads '1e-3' as a string; numbers without a dot are still numbers here.
    value = yaml.safe_load(raw) if raw != '' else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def load_config(path: Optional[str], overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The resolved config: :data:`DEFAULTS`, then the YAML file, then the
    overrides. ``name`` defaults to the file's stem."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        config = merge_config(config, loaded)
        if config['name'] is None:
            config['name'] = os.path.splitext(os.path.basename(path))[0]
    config = apply_overrides(config, overrides)
    if config['name'] is None:
        config['name'] = 'run'
    _validate(config)
    return config


def _validate(config: Dict[str, Any]) -> None:
    if config['mode'] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config['mode']!r}")
    if config['model']['name'] not in ('gnn', 'flat'):
        raise ValueError(f"model.name must be 'gnn' or 'flat', got {config['model']['name']!r}")
    if config['data']['source'] not in ('digits', 'inr', 'toy'):
        raise ValueError(f"data.source must be 'digits', 'inr' or 'toy', got {config['data']['source']!r}")
    if config['data']['source'] == 'toy' and config['data']['objects_per_class'] is not None:
        raise ValueError("data.objects_per_class selects objects of an INR dataset; data.source 'toy' "
                         'has none (use data.limit)')
    if config['device'] not in ('auto', 'cpu', 'cuda'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {config['device']!r}")
    if not isinstance(config['transforms'], list):
        raise ValueError(f"transforms must be a list, got {type(config['transforms']).__name__}")
    for key in ('epochs', 'warmup_epochs'):
        if int(config['optim'][key]) < 0:
            raise ValueError(f'optim.{key} must be >= 0')
    for key in ('objects_per_class', 'samples_per_epoch'):
        value = config['data'][key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f'data.{key} must be a positive integer or null, got {value!r}')


# --------------------------------------------------------------------------- #
# Losses
# --------------------------------------------------------------------------- #

def soft_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    r"""Cross-entropy with hard labels (long ``[B]``) or soft labels (float
    ``[B, K]``, e.g. from MixUp): :math:`-\frac1B\sum_i \sum_k y_{ik}\log p_{ik}`.
    For one-hot ``y`` both forms are equal."""
    if y.dtype in (torch.long, torch.int32, torch.int64):
        return F.cross_entropy(logits, y.view(-1))
    y = y.view(logits.shape)
    return -(y * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def hard_labels(y: Tensor) -> Tensor:
    """Class indices ``[B]`` of hard or soft labels."""
    return y.view(-1) if not y.is_floating_point() else y.view(y.size(0), -1).argmax(-1)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    r"""SimCLR's NT-Xent loss of two views ``[B, P]``: for each of the
    :math:`2B` projections the positive is the other view of the same graph,
    the :math:`2B - 2` others are negatives,
    :math:`\ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{j \neq i}\exp(s_{ij}/\tau)}`
    with cosine similarities :math:`s`."""
    B = z1.size(0)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float('-inf'))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(sim, target)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup from ~0 to 1 over ``warmup_steps``, then
    cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


# --------------------------------------------------------------------------- #
# Transforms
# --------------------------------------------------------------------------- #

class OneHotLabel(BaseTransform):
    r"""Turns a hard label ``y`` (long ``[1]``) into a one-hot float ``[1, K]``
    (a soft label stays as it is), so hard and MixUp samples collate together.

    Args:
        num_classes (int): :math:`K`.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)

    def forward(self, data: Data) -> Data:
        if not data.y.is_floating_point():
            data.y = F.one_hot(data.y.view(-1), self.num_classes).to(torch.get_default_dtype())
        return data

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(num_classes={self.num_classes})'


def build_transforms(spec: Sequence[Any], source=None, num_classes: Optional[int] = None) -> Optional[Compose]:
    """Builds a PyG ``Compose`` from the YAML list: each entry a transform name
    of :mod:`nngraph.transforms` or ``{Name: {arg: value}}``. ``WeightMixUp``
    gets ``source`` (the training set) as its partner pool. With
    ``num_classes`` a final :class:`OneHotLabel` makes every label soft.

    Raises:
        ValueError: an unknown name (the valid ones are listed) or bad arguments.
    """
    steps: List[BaseTransform] = []
    if spec:
        import nngraph.transforms as T
        valid = sorted(getattr(T, '__all__', []))
        for entry in spec:
            if isinstance(entry, str):
                name, args = entry, {}
            elif isinstance(entry, dict) and len(entry) == 1:
                name, args = next(iter(entry.items()))
                args = dict(args or {})
            else:
                raise ValueError(f'each transform must be a name or {{Name: {{args}}}}, got {entry!r}')
            if name not in valid:
                raise ValueError(f'unknown transform {name!r}; valid transforms: {valid}')
            if name == 'WeightMixUp':
                if source is None:
                    raise ValueError('WeightMixUp needs the training dataset as its source')
                args.setdefault('source', source)
            try:
                steps.append(getattr(T, name)(**args))
            except TypeError as err:
                raise ValueError(f'bad arguments for transform {name}: {err}') from None
    if num_classes is not None:
        steps.append(OneHotLabel(num_classes))
    return Compose(steps) if steps else None


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #

class ListDataset(torch.utils.data.Dataset):
    """A list of graphs with an optional per-sample transform (toy data)."""

    def __init__(self, graphs: List[Data], transform=None, num_classes: int = 2) -> None:
        self.graphs, self.transform, self.num_classes = graphs, transform, num_classes
        self.layer_sizes = tuple(graphs[0].layer_sizes)

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Data:
        g = self.graphs[i]
        return self.transform(g) if self.transform is not None else g


def toy_dataset(n: int, split: str, seed: int = 0, layer_sizes: Tuple[int, ...] = (2, 8, 8, 1),
                num_classes: int = 2) -> List[Data]:
    """A separable toy set of random sine MLP graphs: class ``c`` has every
    weight of the last layer shifted by ``+-0.5`` (a permutation-invariant
    signal) on top of Gaussian weights. For tests and smoke runs."""
    from nngraph.graph import from_weights
    offset = {'train': 0, 'val': 1, 'test': 2}[split]
    gen = torch.Generator().manual_seed(seed * 10 + offset)
    graphs = []
    labels = torch.arange(n) % num_classes
    for i in range(n):
        c = int(labels[i])
        W = [torch.randn(b, a, generator=gen) / a ** 0.5 for a, b in zip(layer_sizes[:-1], layer_sizes[1:])]
        W[-1] = W[-1] + (c - (num_classes - 1) / 2)
        b = [torch.randn(d, generator=gen) * 0.1 for d in layer_sizes[1:]]
        graphs.append(from_weights(W, b, 'sine:30.0', y=torch.tensor([c]), object_id=i, view_id=0))
    return graphs


def build_datasets(config: Dict[str, Any], transform=None, build: bool = True):
    """``(train, val, test, train_source)``: the three splits (train with
    ``transform``) and the training split without transforms (WeightMixUp's
    partner pool). Each has ``num_classes`` and ``layer_sizes``."""
    d = config['data']
    if d['source'] == 'toy':
        n = int(d['limit'] or 64)
        mk = lambda split, m, t=None: ListDataset(toy_dataset(m, split, config['seed']), t)
        return mk('train', n, transform), mk('val', n // 2), mk('test', n // 2), mk('train', n)
    from nngraph import data as D
    if d['source'] == 'digits' and build:
        D.build_inr_dataset(source='digits', views=int(d['build_views']), out=d['root'],
                            seed=int(config['seed']), limit=d['limit'])
    root = d['root']
    if not os.path.isdir(root):
        raise ValueError(f"data.root {root!r} does not exist (data.source {d['source']!r})")
    fmt = d['format'] if d['source'] == 'inr' else 'auto'
    split = lambda name, **kw: D.INRGraphDataset(root, name, format=fmt, **kw)
    views, k = d['views'], d['objects_per_class']
    return (split('train', views=views, objects_per_class=k, transform=transform), split('val'), split('test'),
            split('train', views=views, objects_per_class=k))


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #

def build_model(config: Dict[str, Any], num_classes: int, layer_sizes: Sequence[int]) -> nn.Module:
    """The classifier of ``model`` for networks of ``layer_sizes``."""
    m = config['model']
    if m['name'] == 'flat':
        return FlatMLPClassifier(num_classes, layer_sizes, hidden=m['flat_hidden'],
                                 layers=m['flat_layers'], dropout=m['dropout'])
    return GraphClassifier(num_classes, **encoder_kwargs(config, layer_sizes))


def build_encoder(config: Dict[str, Any], layer_sizes: Sequence[int]) -> nn.Module:
    """The encoder of ``model`` alone (contrastive pretraining, probes)."""
    m = config['model']
    if m['name'] == 'flat':
        return FlatMLPEncoder(layer_sizes, hidden=m['flat_hidden'], layers=m['flat_layers'], dropout=m['dropout'])
    return GNNEncoder(**encoder_kwargs(config, layer_sizes))


def encoder_kwargs(config: Dict[str, Any], layer_sizes: Sequence[int]) -> Dict[str, Any]:
    m = config['model']
    return dict(in_features=layer_sizes[0], out_features=layer_sizes[-1], hidden=m['hidden'],
                edge_hidden=m['edge_hidden'], layers=m['layers'], out_dim=m['out_dim'],
                dropout=m['dropout'], aggr=m['aggr'], fourier_features=m['fourier_features'],
                fourier_scale=m['fourier_scale'], probe_points=m['probe_points'])


def fit_normalization(model: nn.Module, dataset, max_graphs: int = 1024) -> None:
    """Fits the encoder's input standardisation on the first ``max_graphs``
    graphs of ``dataset`` (untransformed; the same on every process)."""
    encoder = model if hasattr(model, 'fit_normalization') else getattr(model, 'encoder', None)
    if encoder is None or not hasattr(encoder, 'fit_normalization'):
        return
    n = min(len(dataset), max_graphs)
    encoder.fit_normalization(Batch.from_data_list([dataset[i] for i in range(n)]))


class ContrastiveModel(nn.Module):
    """Encoder + SimCLR projection head; ``forward`` returns projections."""

    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.out_dim, projection_dim)

    def forward(self, batch: Batch) -> Tensor:
        return self.head(self.encoder(batch))


# --------------------------------------------------------------------------- #
# Several processes
# --------------------------------------------------------------------------- #

class Distributed:
    """Process-group state from ``torchrun``'s environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``); a single process when they are absent.
    gloo on CPU, nccl on GPU."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        use_cuda = device == 'cuda' or (device == 'auto' and torch.cuda.is_available())
        if device == 'cuda' and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        self.device = torch.device(f'cuda:{self.local_rank}' if use_cuda else 'cpu')
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group('nccl' if use_cuda else 'gloo')

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: Sequence[float]) -> List[float]:
        """Sums numbers over all processes."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _shard(dataset, dist_: Distributed):
    # Evaluation shards without padding (DistributedSampler would repeat
    # samples), so reduced sums are exact.
    if not dist_.enabled:
        return dataset
    return torch.utils.data.Subset(dataset, list(range(dist_.rank, len(dataset), dist_.world)))


# --------------------------------------------------------------------------- #
# Run folder, checkpoints, curves
# --------------------------------------------------------------------------- #

def prepare_run_dir(config: Dict[str, Any], resume: bool, overwrite: bool) -> str:
    """The run folder; refuses one that already holds a run unless ``resume``
    or ``overwrite`` (which clears it)."""
    run_dir = os.path.join(config['out_dir'], config['name'])
    existing = [f for f in ('metrics.json', 'checkpoint.pt') if os.path.exists(os.path.join(run_dir, f))]
    if existing and not (resume or overwrite):
        finished = _finished(run_dir)
        raise RunExistsError(
            f"{run_dir} already holds a {'finished' if finished else 'partial'} run "
            f"({', '.join(existing)}); pass --resume to continue it or --overwrite to start over")
    if overwrite and not resume:
        for f in ('metrics.json', 'checkpoint.pt', 'curves.png', 'config.yaml'):
            p = os.path.join(run_dir, f)
            if os.path.exists(p):
                os.unlink(p)
    return run_dir


def _finished(run_dir: str) -> bool:
    try:
        with open(os.path.join(run_dir, 'metrics.json')) as f:
            return bool(json.load(f).get('finished'))
    except (OSError, ValueError):
        return False


def write_json(path: str, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)


def write_yaml(path: str, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        yaml.safe_dump(obj, f, sort_keys=False)


def rng_state() -> Dict[str, Any]:
    state = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(path: str, **state) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def plot_curves(path: str, history: List[Dict[str, Any]], title: str) -> None:
    """Train vs validation vs test accuracy (and loss) per epoch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (('train', '-o'), ('val', '--'), ('test', '-s')):
        if f'{split}_acc' in history[0]:
            axes[0].plot(epochs, [h[f'{split}_acc'] for h in history], style, label=split, markersize=3)
        if f'{split}_loss' in history[0]:
            axes[1].plot(epochs, [h[f'{split}_loss'] for h in history], style, label=split, markersize=3)
    axes[0].set_title('accuracy (train: augmented batches)')
    axes[1].set_title('loss')
    for ax in axes:
        ax.set_xlabel('epoch')
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- #
# Loops
# --------------------------------------------------------------------------- #

def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    # Every epoch starts from a state derived only from (seed, epoch, rank):
    # a resumed run draws exactly what the uninterrupted one drew.
    s = (seed * 1_000_003 + epoch * 7919 + rank) % (2 ** 31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, dist_: Distributed) -> Dict[str, float]:
    """Loss and accuracy over a (sharded) split, summed over processes."""
    model.eval()
    loss_sum = correct = count = 0.0
    for batch in loader:
        batch = batch.to(device)
        logits = model(batch)
        loss_sum += float(soft_cross_entropy(logits, batch.y)) * batch.num_graphs
        correct += float((logits.argmax(-1) == hard_labels(batch.y)).sum())
        count += batch.num_graphs
    loss_sum, correct, count = dist_.sum([loss_sum, correct, count])
    return {'loss': loss_sum / max(count, 1), 'acc': correct / max(count, 1)}


def _train_loader(dataset, batch_size: int, num_workers: int, dist_: Distributed, seed: int,
                  samples_per_epoch: Optional[int] = None):
    sampler = None
    if samples_per_epoch is not None:
        if dist_.enabled:
            raise ValueError('data.samples_per_epoch is for one process; under torchrun leave it null')
        # Fixed-size epochs: consecutive shuffles of the split (no repeats
        # within a pass), drawn from torch's global RNG like shuffle=True.
        sampler = torch.utils.data.RandomSampler(dataset, replacement=False, num_samples=int(samples_per_epoch))
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          drop_last=int(samples_per_epoch) > batch_size, num_workers=num_workers,
                          persistent_workers=False), None
    if dist_.enabled:
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=dist_.world, rank=dist_.rank, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      drop_last=len(dataset) > batch_size, num_workers=num_workers,
                      persistent_workers=False), sampler


def run(config: Dict[str, Any], resume: bool = False, overwrite: bool = False,
        progress: bool = True) -> Dict[str, Any]:
    """Runs the experiment ``config`` describes (see :data:`DEFAULTS`) and
    returns its metrics (what ``metrics.json`` holds; on every process).

    Args:
        config: a resolved config (:func:`load_config`).
        resume: continue from ``checkpoint.pt`` of the run folder.
        overwrite: clear an existing run folder first.
        progress: tqdm bars (rank 0 only).
    """
    dist_ = Distributed(config['device'])
    try:
        run_dir = os.path.join(config['out_dir'], config['name'])
        if dist_.main:
            prepare_run_dir(config, resume, overwrite)
            write_yaml(os.path.join(run_dir, 'config.yaml'), config)
        dist_.barrier()
        mode = config['mode']
        if mode == 'supervised':
            return _supervised(config, run_dir, dist_, resume, progress)
        return _contrastive_and_probe(config, run_dir, dist_, resume, progress)
    finally:
        dist_.close()


def _prepare_data(config, dist_, with_transforms: bool, soft_labels: bool):
    # Rank 0 builds the dataset (if needed) while the others wait.
    if dist_.main:
        build_datasets(config, build=True)
    dist_.barrier()
    train, val, test, source = build_datasets(config, build=False)
    K, sizes = int(train.num_classes), tuple(train.layer_sizes)
    transform = build_transforms(config['transforms'] if with_transforms else [], source,
                                 num_classes=K if soft_labels else None)
    train.transform = transform
    return train, val, test, source, K, sizes, transform


def _optimizer_step(loss: Tensor, model: nn.Module, optimizer, scheduler, grad_clip) -> None:
    """Backward, optional gradient-norm clipping, one optimizer and one schedule step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
    optimizer.step()
    scheduler.step()


def _supervised(config, run_dir, dist_, resume, progress) -> Dict[str, Any]:
    seed, o, d = int(config['seed']), config['optim'], config['data']
    device = dist_.device
    torch.manual_seed(seed)
    train, val, test, source, K, sizes, _ = _prepare_data(config, dist_, True, soft_labels=True)

    # ---- model, optimizer, schedule
    torch.manual_seed(seed)             # same initial weights on every rank
    model = build_model(config, K, sizes)
    fit_normalization(model, source)
    model = model.to(device)
    ddp = nn.parallel.DistributedDataParallel(model) if dist_.enabled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=o['lr'], weight_decay=o['weight_decay'])
    loader, sampler = _train_loader(train, int(d['batch_size']), int(d['num_workers']), dist_, seed,
                                    d['samples_per_epoch'])
    steps_per_epoch = len(loader)
    total = int(o['epochs']) * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, int(o['warmup_epochs']) * steps_per_epoch))
    val_loader = DataLoader(_shard(val, dist_), batch_size=int(d['eval_batch_size']))
    test_loader = DataLoader(_shard(test, dist_), batch_size=int(d['eval_batch_size']))

    history, start, best = [], 0, {'epoch': -1, 'val_acc': -1.0, 'state': None}
    ckpt_path = os.path.join(run_dir, 'checkpoint.pt')
    wall_before = 0.0
    if resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck['model'])
        optimizer.load_state_dict(ck['optimizer'])
        scheduler.load_state_dict(ck['scheduler'])
        history, start, best = ck['history'], ck['epoch'] + 1, ck['best']
        wall_before = ck.get('wall_time', 0.0)
        set_rng_state(ck['rng'])

    t_start, train_time, train_graphs = time.perf_counter(), 0.0, 0
    for epoch in range(start, int(o['epochs'])):
        _seed_epoch(seed, epoch, dist_.rank)
        if sampler is not None:
            sampler.set_epoch(epoch)
        ddp.train()
        loss_sum = correct = count = 0.0
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{o["epochs"]}', disable=not (progress and dist_.main),
                   leave=False)
        for batch in bar:
            batch = batch.to(device)
            logits = ddp(batch)
            loss = soft_cross_entropy(logits, batch.y)
            _optimizer_step(loss, model, optimizer, scheduler, o['grad_clip'])
            n = batch.num_graphs
            loss_sum += float(loss.detach()) * n
            correct += float((logits.argmax(-1) == hard_labels(batch.y)).sum())
            count += n
            bar.set_postfix(loss=f'{loss_sum / count:.3f}', acc=f'{correct / count:.3f}')
        epoch_time = time.perf_counter() - t0
        loss_sum, correct, count = dist_.sum([loss_sum, correct, count])
        train_time += epoch_time
        train_graphs += count
        v = evaluate(model, val_loader, device, dist_)
        t = evaluate(model, test_loader, device, dist_)
        row = {'epoch': epoch, 'train_loss': loss_sum / max(count, 1), 'train_acc': correct / max(count, 1),
               'val_loss': v['loss'], 'val_acc': v['acc'], 'test_loss': t['loss'], 'test_acc': t['acc'],
               'lr': scheduler.get_last_lr()[0], 'epoch_time_s': epoch_time,
               'graphs_per_s': count / max(epoch_time, 1e-9)}
        history.append(row)
        if v['acc'] > best['val_acc']:
            best = {'epoch': epoch, 'val_acc': v['acc'],
                    'state': {k: x.detach().cpu().clone() for k, x in model.state_dict().items()}}
        if dist_.main:
            if progress:
                tqdm.write(f"epoch {epoch + 1}: train {row['train_acc']:.3f} val {v['acc']:.3f} "
                           f"test {t['acc']:.3f} ({row['graphs_per_s']:.0f} graphs/s)")
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), epoch=epoch, history=history, best=best,
                            rng=rng_state(), config=config,
                            wall_time=wall_before + time.perf_counter() - t_start)
            _write_metrics(run_dir, config, history, best, None, wall_before + time.perf_counter() - t_start,
                           finished=False)
        dist_.barrier()

    # ---- final evaluation of the best-on-validation model on the test split
    if best['state'] is not None:
        model.load_state_dict(best['state'])
    final = evaluate(model, test_loader, device, dist_)
    # The generalization gap's other end: the same model on the training
    # graphs as they are (no augmentation), not the running batch accuracy.
    clean = evaluate(model, DataLoader(_shard(source, dist_), batch_size=int(d['eval_batch_size'])), device, dist_)
    extra = {'train_acc': clean['acc'], 'train_loss': clean['loss']}
    wall = wall_before + time.perf_counter() - t_start
    metrics = _metrics(config, history, best, final, wall, extra)
    if dist_.main:
        _write_metrics(run_dir, config, history, best, final, wall, finished=True, extra=extra)
        if history:
            plot_curves(os.path.join(run_dir, 'curves.png'), history,
                        f"{config['name']}: best epoch {best['epoch']}, test acc {final['acc']:.3f}")
    dist_.barrier()
    return metrics


def _metrics(config, history, best, final, wall, extra=None) -> Dict[str, Any]:
    times = [h['epoch_time_s'] for h in history if 'epoch_time_s' in h]
    n = sum(h['graphs_per_s'] * h['epoch_time_s'] for h in history if 'graphs_per_s' in h)
    m = {'name': config['name'], 'mode': config['mode'], 'epochs': history,
         'best_epoch': best['epoch'] if best else None,
         'best_val_acc': best['val_acc'] if best else None,
         'test_acc': final['acc'] if final else None, 'test_loss': final['loss'] if final else None,
         'wall_time_s': wall, 'train_graphs_per_s': n / sum(times) if times and sum(times) > 0 else None,
         'world_size': int(os.environ.get('WORLD_SIZE', '1'))}
    if extra:
        m.update(extra)
    return m


def _write_metrics(run_dir, config, history, best, final, wall, finished, extra=None) -> None:
    m = _metrics(config, history, best, final, wall, extra)
    m['finished'] = finished
    write_json(os.path.join(run_dir, 'metrics.json'), m)


# --------------------------------------------------------------------------- #
# Contrastive pretraining and linear probe
# --------------------------------------------------------------------------- #

class TwoViews(torch.utils.data.Dataset):
    """Two independently augmented views of each graph of ``dataset``."""

    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        g = self.dataset[i]
        if self.transform is None:
            return g, g
        return self.transform(g), self.transform(g)


@torch.no_grad()
def embed(encoder: nn.Module, dataset, device, batch_size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """Frozen embeddings ``[n, out_dim]`` and labels ``[n]`` of a dataset."""
    encoder.eval()
    zs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        batch = batch.to(device)
        zs.append(encoder(batch).cpu())
        ys.append(hard_labels(batch.y).cpu())
    return torch.cat(zs).numpy(), torch.cat(ys).numpy()


def linear_probe(encoder: nn.Module, train, val, test, device, Cs: Sequence[float]) -> Dict[str, float]:
    """Logistic regression on frozen, standardised embeddings; the inverse L2
    strength ``C`` is chosen on validation accuracy; returns train/val/test
    accuracy of the chosen probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    Xtr, ytr = embed(encoder, train, device)
    Xva, yva = embed(encoder, val, device)
    Xte, yte = embed(encoder, test, device)
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xva, Xte = scaler.transform(Xtr), scaler.transform(Xva), scaler.transform(Xte)
    best = None
    for C in Cs:
        clf = LogisticRegression(C=float(C), max_iter=2000).fit(Xtr, ytr)
        acc = float(clf.score(Xva, yva))
        if best is None or acc > best[0]:
            best = (acc, C, clf)
    acc, C, clf = best
    return {'train_acc': float(clf.score(Xtr, ytr)), 'val_acc': acc, 'test_acc': float(clf.score(Xte, yte)),
            'C': float(C)}


def _contrastive_and_probe(config, run_dir, dist_, resume, progress) -> Dict[str, Any]:
    seed, o, d, c = int(config['seed']), config['optim'], config['data'], config['contrastive']
    device = dist_.device
    mode = config['mode']
    torch.manual_seed(seed)
    _, val, test, source, K, sizes, transform = _prepare_data(config, dist_, True, soft_labels=False)
    torch.manual_seed(seed)
    encoder = build_encoder(config, sizes)
    fit_normalization(encoder, source)
    encoder = encoder.to(device)
    random_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = ContrastiveModel(encoder, int(c['projection_dim'])).to(device)
    history, wall_before, start = [], 0.0, 0
    ckpt_path = os.path.join(run_dir, 'checkpoint.pt')
    t_start = time.perf_counter()

    if mode == 'probe':
        path = config['probe']['checkpoint']
        if not path:
            raise ValueError('mode probe needs probe.checkpoint: a contrastive run folder or its checkpoint.pt')
        if os.path.isdir(path):
            path = os.path.join(path, 'checkpoint.pt')
        ck = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(ck['model'])
    else:
        ddp = nn.parallel.DistributedDataParallel(model) if dist_.enabled else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=o['lr'], weight_decay=o['weight_decay'])
        loader, sampler = _train_loader(TwoViews(source, transform), int(d['batch_size']),
                                        int(d['num_workers']), dist_, seed, d['samples_per_epoch'])
        total = int(o['epochs']) * len(loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total, int(o['warmup_epochs']) * len(loader)))
        if resume and os.path.exists(ckpt_path):
            ck = torch.load(ckpt_path, map_location=device, weights_only=False)
            model.load_state_dict(ck['model'])
            optimizer.load_state_dict(ck['optimizer'])
            scheduler.load_state_dict(ck['scheduler'])
            history, start = ck['history'], ck['epoch'] + 1
            wall_before = ck.get('wall_time', 0.0)
            set_rng_state(ck['rng'])
        for epoch in range(start, int(o['epochs'])):
            _seed_epoch(seed, epoch, dist_.rank)
            if sampler is not None:
                sampler.set_epoch(epoch)
            ddp.train()
            loss_sum = count = 0.0
            t0 = time.perf_counter()
            bar = tqdm(loader, desc=f'ssl epoch {epoch + 1}/{o["epochs"]}',
                       disable=not (progress and dist_.main), leave=False)
            for v1, v2 in bar:
                v1, v2 = v1.to(device), v2.to(device)
                # One forward over both views: one batch, one DDP all-reduce.
                z = ddp(Batch.from_data_list(v1.to_data_list() + v2.to_data_list()))
                loss = nt_xent(z[:v1.num_graphs], z[v1.num_graphs:], float(c['temperature']))
                _optimizer_step(loss, model, optimizer, scheduler, o['grad_clip'])
                loss_sum += float(loss.detach()) * v1.num_graphs
                count += v1.num_graphs
                bar.set_postfix(loss=f'{loss_sum / count:.3f}')
            epoch_time = time.perf_counter() - t0
            loss_sum, count = dist_.sum([loss_sum, count])
            history.append({'epoch': epoch, 'train_loss': loss_sum / max(count, 1),
                            'epoch_time_s': epoch_time, 'graphs_per_s': 2 * count / max(epoch_time, 1e-9)})
            if dist_.main:
                save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict(), epoch=epoch, history=history,
                                rng=rng_state(), config=config,
                                wall_time=wall_before + time.perf_counter() - t_start)
                _write_metrics(run_dir, config, history, None, None,
                               wall_before + time.perf_counter() - t_start, finished=False)
            dist_.barrier()

    extra = {}
    if mode in ('probe', 'contrastive+probe'):
        # The probe is cheap and deterministic: every rank computes it, rank 0 writes.
        Cs = config['probe']['C']
        plain_train = source
        extra['probe'] = linear_probe(model.encoder, plain_train, val, test, device, Cs)
        rand = build_encoder(config, sizes).to(device)
        rand.load_state_dict(random_state)
        extra['probe_random_encoder'] = linear_probe(rand, plain_train, val, test, device, Cs)
    wall = wall_before + time.perf_counter() - t_start
    final = None
    if 'probe' in extra:
        final = {'acc': extra['probe']['test_acc'], 'loss': None}
    metrics = _metrics(config, history, None, final, wall, extra)
    if dist_.main:
        _write_metrics(run_dir, config, history, None, final, wall, finished=True, extra=extra)
        if history:
            plot_curves(os.path.join(run_dir, 'curves.png'), history, f"{config['name']}: NT-Xent loss")
    dist_.barrier()
    return metrics
