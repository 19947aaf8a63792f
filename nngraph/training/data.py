"""Data: the transform pipeline named in the config, the datasets of the
three splits (built-in digits, a built INR folder, a model zoo, or the toy
set), and the training loader."""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform, Compose

from nngraph.data.sources import SOURCES as DATA_SOURCES
from nngraph.training.distributed import Distributed

__all__ = ['SOURCES', 'BUILT_SOURCES', 'AUTO_BUILD', 'REGRESSION_SOURCES', 'zoo_datasets', 'ensure_zoo',
           'architectures_of', 'OneHotLabel', 'build_transforms', 'ListDataset', 'toy_dataset',
           'build_datasets', 'prepare_data', 'train_loader']

#: Built-in sources of ``python -m nngraph.data build NAME``, read from the
#: build at ``data.root``.
BUILT_SOURCES = tuple(DATA_SOURCES)
#: The built-in sources a run fits itself when ``data.root`` holds no build:
#: digits takes about 40 s on 2 cores. MNIST's and Fashion-MNIST's 70,000
#: INRs are a job of their own (sharded, on a GPU), so a run only reads an
#: existing build of them and names the command that makes one.
AUTO_BUILD = ('digits',)
#: Every value of ``data.source``: a built-in source, ``inr`` (any dataset
#: folder INRGraphDataset reads, e.g. a published one), ``zoo`` (a model zoo
#: of :mod:`nngraph.zoo`: regression of a float target) or the toy set.
SOURCES = BUILT_SOURCES + ('inr', 'zoo', 'toy')
#: The sources whose target is a float (a regression task).
REGRESSION_SOURCES = ('zoo',)


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
    if d['source'] == 'zoo':
        return zoo_datasets(config, transform, build)
    from nngraph import data as D
    root = os.path.expanduser(d['root'])
    if d['source'] in AUTO_BUILD and build:
        D.build_inr_dataset(source=d['source'], views=int(d['build_views']), out=root,
                            seed=int(config['seed']), limit=d['limit'], workers=int(d['build_workers']))
    if d['source'] in BUILT_SOURCES:
        _check_build(root, d['source'])
    if not os.path.isdir(root):
        raise ValueError(f"data.root {root!r} does not exist (data.source {d['source']!r})")
    fmt = d['format'] if d['source'] == 'inr' else 'auto'
    split = lambda name, **kw: D.INRGraphDataset(root, name, format=fmt, **kw)
    views, k = d['views'], d['objects_per_class']
    return (split('train', views=views, objects_per_class=k, transform=transform), split('val'), split('test'),
            split('train', views=views, objects_per_class=k))


def zoo_datasets(config: Dict[str, Any], transform=None, build: bool = True):
    """``(train, val, test, train_source)`` of a model zoo
    (:class:`nngraph.zoo.ZooGraphDataset`) at ``data.root``, with
    ``data.target``, ``data.zoo_epochs``, ``data.architecture`` and
    ``data.activation`` as its selection, split by run with ``data.zoo_seed``
    (the same split whatever the run's ``seed``). When ``data.root`` holds no
    zoo and ``build`` is true, the default digits zoo of seed
    ``data.zoo_seed`` is built there first (``data.limit`` networks if set;
    2,000 take about 75 s on one core); a zoo already there is read as it
    is, whatever settings built it.

    Raises:
        ValueError: a selection that leaves a split empty, naming the keys.
    """
    from nngraph.zoo import ZooGraphDataset
    d = config['data']
    root = ensure_zoo(config) if build else os.path.expanduser(d['root'])
    if not os.path.exists(os.path.join(root, 'manifest.json')):
        raise ValueError(f"data.root {root!r} holds no model zoo (no manifest.json); build one: "
                         f"python -m nngraph.zoo build digits --root {root}")
    kw = dict(target=d['target'] or 'test_acc', epochs=d['zoo_epochs'], architecture=d['architecture'],
              activation=d['activation'], seed=int(d['zoo_seed']))
    splits = {s: ZooGraphDataset(root, s, **kw) for s in ('train', 'val', 'test')}
    source = copy.copy(splits['train'])     # the same items without the transform (shares the tensors)
    splits['train'].transform = transform
    empty = [s for s, ds in splits.items() if len(ds) == 0]
    if empty:
        found = [f'{list(a)} {act}' for a, act in splits['train'].architectures][:6]
        raise ValueError(f"the zoo selection data.architecture={d['architecture']!r}, "
                         f"data.activation={d['activation']!r}, data.zoo_epochs={d['zoo_epochs']!r} leaves the "
                         f"{'/'.join(empty)} split of {root!r} empty; the zoo holds e.g. {found}")
    return splits['train'], splits['val'], splits['test'], source


def ensure_zoo(config: Dict[str, Any]) -> str:
    """``data.root``, where the default digits zoo of seed ``data.zoo_seed``
    (``data.limit`` networks if set) is built first unless a complete zoo is
    there already."""
    from nngraph.zoo import build_zoo
    d = config['data']
    root = os.path.expanduser(d['root'])
    if not os.path.exists(os.path.join(root, 'manifest.json')):
        extra = {'networks': int(d['limit'])} if d['limit'] is not None else {}
        build_zoo('digits', root, seed=int(d['zoo_seed']), progress=False, **extra)
    return root


def architectures_of(*datasets) -> List[Tuple[int, ...]]:
    """The layer sizes of every architecture present in ``datasets``, sorted:
    a zoo's selection may mix them; any other dataset has one
    (``layer_sizes``)."""
    found = set()
    for ds in datasets:
        if hasattr(ds, 'checkpoints'):          # ZooGraphDataset: the architectures its items use
            sizes = [a for a, _ in ds.architectures]
            found |= {sizes[int(i)] for i in ds.checkpoints['architecture'].unique()}
        else:
            found.add(tuple(int(v) for v in ds.layer_sizes))
    return sorted(found)


def _check_build(root: str, source: str) -> None:
    # A missing build of a source a run does not fit itself is the user's next
    # step, not a crash deep in the dataset reader: name the command.
    manifest = os.path.join(root, 'manifest.json')
    if not os.path.exists(manifest):
        raise ValueError(f'data.root {root!r} holds no {source} build (no manifest.json); build it first: '
                         f'python -m nngraph.data build {source} --out {root}')
    with open(manifest) as f:
        built = json.load(f).get('settings', {}).get('source')
    if built is not None and built != source:
        raise ValueError(f'data.root {root!r} holds a build of {built!r}, but data.source is {source!r}')


def prepare_data(config, dist_, with_transforms: bool, soft_labels: bool):
    """``(train, val, test, source, num_classes, layer_sizes, transform)``: the
    splits, built by rank 0 if needed, the training split with the config's
    transforms (and one-hot labels when ``soft_labels`` and the task is a
    classification). For a model zoo ``layer_sizes`` is the first
    architecture (every one has the same input and output widths;
    :func:`architectures_of` lists them all) and ``num_classes`` the zoo's
    task's class count."""
    # Rank 0 builds the dataset (if needed) while the others wait.
    regression = config['data']['source'] in REGRESSION_SOURCES
    if dist_.main:
        ensure_zoo(config) if regression else build_datasets(config, build=True)
    dist_.barrier()
    train, val, test, source = build_datasets(config, build=False)
    K = int(train.num_classes)
    sizes = architectures_of(train, val, test)[0] if regression else tuple(train.layer_sizes)
    transform = build_transforms(config['transforms'] if with_transforms else [], source,
                                 num_classes=K if soft_labels and not regression else None)
    train.transform = transform
    return train, val, test, source, K, sizes, transform


def train_loader(dataset, batch_size: int, num_workers: int, dist_: Distributed, seed: int,
                  samples_per_epoch: Optional[int] = None):
    """``(loader, sampler)`` of the training split: shuffled, ``samples_per_epoch``
    graphs per epoch if set, a ``DistributedSampler`` under torchrun."""
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
