"""The plan of a zoo: its images, its settings, and every network's hyperparameters.

Everything here is a pure function of the settings, so any process (a shard,
a resumed build) computes the same plan:

* the images (:func:`zoo_images`): ``digits`` (64 features; a stratified,
  seeded third of the 1,797 images is the test set), ``fashion-mnist``
  (the first ``train_images`` official training images and the first
  ``test_images`` official test images, 2x2-average-pooled to 14x14 = 196
  features so thousands of networks train in minutes); pixels in ``[0, 1]``,
  flattened row-major: what a zoo network reads;
* the hyperparameters of run ``r`` (:func:`sample_runs`), drawn from
  counter-based random numbers of ``(seed, r)``: run ``r`` is the same
  network in a zoo of 100 or of 10,000;
* the chunks (:func:`plan_chunks`): runs grouped by architecture (depth,
  width, activation), ordered by epoch budget inside a group, cut into
  batches of at most ``chunk_size`` that train together.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nngraph import activations as A
from nngraph.data import store
from nngraph.data.build import split_objects
from nngraph.data.workspace import setting
from nngraph.data.sources import load_idx_source, load_source
from nngraph.zoo.fitting import HYPER, counter_uniform

__all__ = ['SOURCES', 'DEFAULTS', 'FMNIST_DEFAULTS', 'SOURCE_DEFAULTS', 'RUN_FIELDS', 'defaults_for',
           'check_settings', 'zoo_images', 'sample_runs', 'plan_chunks', 'architecture_of']

SOURCES = ('digits', 'fashion-mnist')

# The default digits zoo: ranges wide enough that test accuracy spreads from
# chance (10%) to the best an MLP reaches on digits (~97%): small learning rates
# and one-epoch budgets stay near chance, label noise and small training subsets
# pull the others down (measured spread in the README). Log-uniform ranges are
# (low, high); choices are sequences.
DEFAULTS: Dict[str, Any] = dict(
    networks=2000,
    depths=(1, 2, 3), widths=(8, 16, 32), activations=('relu', 'tanh', 'gelu', 'sine:1.0'),
    lr=(1e-4, 3e-2), weight_decay=(1e-6, 1e-2), init_scale=(0.25, 4.0),
    label_noise=(0.0, 0.5), train_fraction=(0.05, 1.0), epochs=(1, 2, 4, 8, 16, 32),
    batch_size=32, chunk_size=128, test_fraction=1 / 3,
)
# Fashion-MNIST: 10,000 training images (an epoch is 157 steps of 64) and the
# first 10,000 official test images, at 14x14; budgets up to 16 epochs.
FMNIST_DEFAULTS: Dict[str, Any] = dict(
    DEFAULTS, networks=1000, epochs=(1, 2, 4, 8, 16), batch_size=64,
    train_images=10000, test_images=10000, pool=2,
)
del FMNIST_DEFAULTS['test_fraction']     # the official test images are the test set
SOURCE_DEFAULTS: Dict[str, Dict[str, Any]] = {'digits': DEFAULTS, 'fashion-mnist': FMNIST_DEFAULTS}

# Per-run columns of the runs table, in the order they are drawn.
RUN_FIELDS = ('depth', 'width', 'activation', 'lr', 'weight_decay', 'init_scale', 'label_noise',
              'train_fraction', 'epochs')
_LOG_UNIFORM = ('lr', 'weight_decay', 'init_scale')
_UNIFORM = ('label_noise', 'train_fraction')
_CHOICES = dict(depth='depths', width='widths', activation='activations', epochs='epochs')


def defaults_for(source: str) -> Dict[str, Any]:
    """The zoo settings of ``source`` unless told otherwise."""
    if source not in SOURCE_DEFAULTS:
        raise ValueError(f'unknown zoo source {source!r}; choose one of {", ".join(SOURCES)}')
    return dict(SOURCE_DEFAULTS[source])


def _choices(o: Dict[str, Any], key: str, kind: type, low: float) -> List:
    value = o[key]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f'zoo setting {key}={value!r} must be a non-empty sequence')
    return [setting({key: v}, key, kind, low) for v in value]


def _range(o: Dict[str, Any], key: str, low: float, high: Optional[float] = None,
           positive: bool = False) -> List[float]:
    """``o[key]`` as ``[lo, hi]``: two finite numbers, ``low <= lo <= hi (<= high)``
    (``> 0`` where ``positive``: a log-uniform range)."""
    value = o[key]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f'zoo setting {key}={value!r} must be a pair (low, high)')
    lo, hi = (setting({key: v}, key, float, low, open_low=positive) for v in value)
    if lo > hi or (high is not None and hi > high):
        raise ValueError(f'zoo setting {key}={value!r} must have low <= high'
                         + (f' <= {high:g}' if high is not None else ''))
    return [lo, hi]


def check_settings(source: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The source's defaults updated by ``settings``, every value checked and
    typed before anything is loaded or trained (a NaN ``lr`` is refused by name).

    Raises:
        ValueError: an unknown source, an unknown setting, or a value out of
            range, each named with its value.
    """
    defaults = defaults_for(source)
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f'unknown zoo setting(s) {unknown} for source {source!r}; valid: {sorted(defaults)}')
    o = {**defaults, **settings}
    acts = o['activations']
    if isinstance(acts, str) or not isinstance(acts, Sequence) or not acts:
        raise ValueError(f'zoo setting activations={acts!r} must be a non-empty sequence of names')
    typed: Dict[str, Any] = dict(
        networks=setting(o, 'networks', int, 1),
        depths=_choices(o, 'depths', int, 1), widths=_choices(o, 'widths', int, 1),
        activations=[A.canonical(a) for a in acts],
        lr=_range(o, 'lr', 0.0, positive=True), weight_decay=_range(o, 'weight_decay', 0.0, positive=True),
        init_scale=_range(o, 'init_scale', 0.0, positive=True),
        label_noise=_range(o, 'label_noise', 0.0, 1.0), train_fraction=_range(o, 'train_fraction', 0.0, 1.0),
        epochs=_choices(o, 'epochs', int, 1),
        batch_size=setting(o, 'batch_size', int, 1), chunk_size=setting(o, 'chunk_size', int, 1))
    if typed['train_fraction'][0] <= 0:
        raise ValueError(f'zoo setting train_fraction={o["train_fraction"]!r} must be above 0')
    for key in ('depths', 'widths', 'activations', 'epochs'):
        if len(set(typed[key])) != len(typed[key]):
            raise ValueError(f'zoo setting {key}={o[key]!r} lists a value twice')
    if 'test_fraction' in defaults:
        typed['test_fraction'] = setting(o, 'test_fraction', float, 0.0, open_low=True)
        if typed['test_fraction'] >= 1:
            raise ValueError(f'zoo setting test_fraction={o["test_fraction"]!r} must be below 1')
    for key in ('train_images', 'test_images', 'pool'):
        if key in defaults:
            typed[key] = setting(o, key, int, 1)
    return typed


def zoo_images(source: str, settings: Dict[str, Any], seed: int,
               source_dir=None) -> Dict[str, Any]:
    """The zoo's images: ``train_x`` ``[n_train, d]`` and ``test_x`` float in
    ``[0, 1]``, their labels, the images' positions in the source
    (``train_ids``, ``test_ids``), ``num_classes`` and ``fingerprint`` (of the
    source's bytes as read, before pooling)."""
    if source == 'digits':
        images, labels, _ = load_source('digits')
        parts = split_objects(labels, 0.0, settings['test_fraction'], seed)
        train_ids, test_ids = parts['train'], parts['test']
    else:
        images, labels, num_train = load_idx_source(source, source_dir)
        train_ids = torch.arange(min(settings['train_images'], num_train))
        test_ids = num_train + torch.arange(min(settings['test_images'], labels.numel() - num_train))
    fingerprint = store.content_sha256(dict(images=images, labels=labels))[:16]
    pool = settings.get('pool', 1)
    if pool > 1:    # [N, H, W, C] -> average over pool x pool blocks (exact, no resampling)
        images = F.avg_pool2d(images.permute(0, 3, 1, 2), pool).permute(0, 2, 3, 1).contiguous()
    flat = images.reshape(images.shape[0], -1)
    return dict(train_x=flat[train_ids].contiguous(), train_y=labels[train_ids].clone(),
                test_x=flat[test_ids].contiguous(), test_y=labels[test_ids].clone(),
                train_ids=train_ids, test_ids=test_ids, num_classes=int(labels.max()) + 1,
                image_shape=list(images.shape[1:]), fingerprint=fingerprint)


def sample_runs(seed: int, networks: int, settings: Dict[str, Any]) -> Dict[str, Tensor]:
    """Hyperparameters of runs ``0 .. networks - 1``: a table of columns
    ``[networks]`` (``run_id`` and :data:`RUN_FIELDS`; ``activation`` indexes
    ``settings['activations']``). Choices are uniform, ``lr``,
    ``weight_decay`` and ``init_scale`` log-uniform, ``label_noise`` and
    ``train_fraction`` uniform in their ranges; every value is a counter
    uniform of ``(seed, run, field)``, so run ``r`` does not depend on
    ``networks``."""
    run = torch.arange(int(networks))
    table: Dict[str, Tensor] = dict(run_id=run)
    for f_i, field in enumerate(RUN_FIELDS):
        u = counter_uniform(seed, run, HYPER, f_i)
        if field in _LOG_UNIFORM or field in _UNIFORM:
            lo, hi = settings[field]
            if field in _LOG_UNIFORM:
                table[field] = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            else:
                table[field] = lo + u * (hi - lo)
        else:
            options = settings[_CHOICES[field]]
            pick = torch.floor(u * len(options)).long()
            table[field] = pick if field == 'activation' else torch.tensor(options, dtype=torch.long)[pick]
    return table


def architecture_of(runs: Dict[str, Tensor], k: int, settings: Dict[str, Any],
                    num_features: int, num_classes: int) -> Tuple[Tuple[int, ...], str]:
    """Layer sizes and activation string of run ``k``."""
    depth, width = int(runs['depth'][k]), int(runs['width'][k])
    return (num_features, *([width] * depth), num_classes), settings['activations'][int(runs['activation'][k])]


def plan_chunks(runs: Dict[str, Tensor], chunk_size: int) -> List[Tensor]:
    """Run ids of every chunk, in build order: runs sorted by (depth, width,
    activation, epochs, run id) and cut into slices of at most ``chunk_size``
    of one architecture. Sorting by budget keeps a chunk's networks finishing
    together, so few steps are spent on frozen ones."""
    n = runs['run_id'].numel()
    key = torch.stack([runs['depth'], runs['width'], runs['activation'], runs['epochs'], runs['run_id']], 1)
    order = torch.arange(n)
    for c in reversed(range(key.shape[1])):      # lexicographic: stable sorts, last key first
        order = order[torch.sort(key[order, c], stable=True).indices]
    arch = key[order, :3]
    new = torch.ones(n, dtype=torch.bool)
    new[1:] = (arch[1:] != arch[:-1]).any(1)
    starts = new.nonzero().squeeze(1).tolist() + [n]
    chunks = []
    for a, b in zip(starts[:-1], starts[1:]):     # a loop over architectures, not runs
        chunks += [order[i:min(i + chunk_size, b)] for i in range(a, b, chunk_size)]
    return chunks
