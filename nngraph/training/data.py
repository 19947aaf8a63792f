"""Data: the transform pipeline named in the config, the datasets of the
three splits (built-in digits, a built INR folder, or the toy set), and the
training loader."""
from __future__ import annotations

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

__all__ = ['SOURCES', 'BUILT_SOURCES', 'AUTO_BUILD', 'OneHotLabel', 'build_transforms', 'ListDataset', 'toy_dataset',
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
#: folder INRGraphDataset reads, e.g. a published one) or the toy set.
SOURCES = BUILT_SOURCES + ('inr', 'toy')


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
    from nngraph import data as D
    root = os.path.expanduser(d['root'])
    if d['source'] in AUTO_BUILD and build:
        D.build_inr_dataset(source=d['source'], views=int(d['build_views']), out=root,
                            seed=int(config['seed']), limit=d['limit'])
    if d['source'] in BUILT_SOURCES:
        _check_build(root, d['source'])
    if not os.path.isdir(root):
        raise ValueError(f"data.root {root!r} does not exist (data.source {d['source']!r})")
    fmt = d['format'] if d['source'] == 'inr' else 'auto'
    split = lambda name, **kw: D.INRGraphDataset(root, name, format=fmt, **kw)
    views, k = d['views'], d['objects_per_class']
    return (split('train', views=views, objects_per_class=k, transform=transform), split('val'), split('test'),
            split('train', views=views, objects_per_class=k))


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
    transforms (and one-hot labels when ``soft_labels``)."""
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
