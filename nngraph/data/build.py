"""Building multi-view INR datasets: splits by object, batched fitting, shards, merge.

Plan of a build (everything below is a pure function of the settings, so any
process or machine computes the same plan):

1. load the source images and labels (:mod:`nngraph.data.sources`);
2. split the *objects* (images) into train/val/test, stratified by class
   (:func:`split_objects`): views of one image never cross splits;
3. list every INR to fit, split by split, object by object, view by view,
   with its own seed :func:`inr_seed` ``(seed, object_id, view)``: view ``v``
   of an object is the same network whatever else is built;
4. cut that list into chunks of ``chunk_size`` INRs and fit each chunk as one
   batch (:func:`nngraph.inr.fit`).

A shard ``i/n`` fits a contiguous range of chunks and writes
``DIR/shards/shard-i-of-n.pt``; :func:`merge_shards` joins the ``n`` shard
files into the same split files that a one-shot build writes (the chunks are
the same batches, so the result is identical).

``workers=N`` and torchrun's ranks (``distributed=True``) cut the chunks the
same way, but the slices are fitted into ``DIR/.partial/`` under the lock of
the one process that then writes the build from them (the parent; rank 0),
exactly as a resumed build reads its finished chunks: the same files as one
process writes, and no shard files.

What a build promises (issue 19):

* settings are checked before anything is loaded or fitted (a NaN ``lr``
  is refused by name), and the output folder is created and locked before
  fitting: an unwritable root fails in a second, not after the fit;
* one process writes a root at a time: ``DIR/.lock`` (``O_CREAT | O_EXCL``,
  holding pid and host) makes a second build or merge refuse, naming the
  root and the holder; a lock whose process of this host is gone (killed) is
  taken over. A shard locks only its own file, so shards run side by side;
* every finished chunk is saved to ``DIR/.partial/`` (atomically,
  checksummed, with the settings): a killed build resumes where it stopped,
  bit for bit the uninterrupted build (every INR's fit depends only on its
  own chunk), and cleans the temporary files the kill left;
  ``overwrite=True`` discards them and refits everything;
* a chunk in which a fit diverged (non-finite weights or loss) is refused,
  naming the image;
* shard files carry a checksum of their contents (:func:`store.seal`), which
  :func:`merge_shards` verifies before writing anything.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import operator
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from nngraph import inr as I
from nngraph._atomic import remove_stale_temp_files
from nngraph.data import store
from nngraph.data.sources import IDX_SOURCES, Source, load_idx_source, load_source, published_val, resize
from nngraph.data.workspace import (DATA_ROOT_ENV, LOCK, PARTIAL, chunk_path, every_rank, in_workers, parse_shard,
                                    rank_group, refuse_other_settings, rewriting, setting, shard_slice, stopping,
                                    writer)

__all__ = ['build_inr_dataset', 'merge_shards', 'split_objects', 'fixed_splits', 'inr_seed', 'data_root',
           'defaults_for', 'DEFAULTS', 'FMNIST_DEFAULTS', 'SOURCE_DEFAULTS']

# Defaults of the built-in digits-INR dataset, chosen so that the weights, not
# only the function, carry the class (measured with `PYTHONPATH=.
# OMP_NUM_THREADS=1 python benchmarks/digits_weight_signal.py --build DIR
# [--set steps=N]`, one core). DWSNets' conventions (init 'dwsnets', w0 = 30
# in every sine layer, output + 0.5, as FMNIST_DEFAULTS), Adam at lr 1e-3 for
# a fixed 300 steps, no early stop. Logistic regression on the weights aligned
# to one reference INR (matching.align, signs=True), on unseen digits:
#   steps 150: 53.2% (build 47 s, PSNR 25.1 dB, min 18.7)
#   steps 300: 57.4% (build 90 s, PSNR 28.6 dB, min 21.8)   <- the default
#   steps 500: 54.3% (build 164 s, PSNR 31.1 dB, min 26.2)
# (+-2.6 points on 359 test INRs; raw weights stay at chance, 10.3%; function
# values on the grid 91.6%). 300 steps read as much as 500 at little over half
# the build time, which the default `python train.py` pays; 150 steps fit
# visibly worse. A larger lr reads less (500 steps at 2e-3: 39.8%; 150 at
# 3e-3: 25.9%). The previous defaults (SIREN init, w0 = 15, lr 2e-3, each INR
# stopped at 40 dB after ~69 steps) read 10.3% aligned, 9.5% raw, 91.9%
# function: their weights hardly left the random start.
# The 8x8 digits are upsampled to 16x16: on the native grid SIRENs fitted to
# 40 dB were noise between the pixels (11 dB against a bilinear upsampling),
# so off-grid transforms (rotation, scaling) and probe points would read
# noise; at 16x16 these INRs are smooth (30.0 dB between the pixels).
# Chunks of 128 INRs: same user time as 1024, cache-friendly activations.
DEFAULTS: Dict[str, Any] = dict(
    views=4, val_views=1, test_views=1, grid=16, val_fraction=0.1, test_fraction=0.2,
    hidden=(32, 32), w0=30.0, first_w0=None, init='dwsnets', output_offset=0.5,
    steps=300, lr=1e-3, target_psnr=None, chunk_size=128,
)

# FMNIST-INR as DWSNets and neural-graphs published it: 2-32-32-1 SIRENs with
# w0 = 30 in every sine layer, DWSNets' initialisation and output offset +0.5,
# on the native 28x28 grid, one INR per image, the published split (val: the
# 5,000 training images of splits/fashion-mnist.json; test: the official test
# images). Steps and learning rate: see FMNIST_FIT (chosen by measurement).
FMNIST_FIT: Dict[str, Any] = dict(steps=500, lr=1e-3, target_psnr=None)
FMNIST_DEFAULTS: Dict[str, Any] = dict(
    views=1, val_views=1, test_views=1, grid=None,
    hidden=(32, 32), w0=30.0, first_w0=None, init='dwsnets', output_offset=0.5,
    chunk_size=128, **FMNIST_FIT,
)
# MNIST: the same conventions; no published validation list ships, so a seeded
# stratified twelfth of the training images is validation (5,000 of 60,000).
MNIST_DEFAULTS: Dict[str, Any] = dict(FMNIST_DEFAULTS, val_fraction=5000 / 60000)

SOURCE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'digits': DEFAULTS, 'custom': DEFAULTS, 'fashion-mnist': FMNIST_DEFAULTS, 'mnist': MNIST_DEFAULTS,
}
_SHARD_RE = re.compile(r'shard-(\d+)-of-(\d+)\.pt$')
# 2: the source fingerprint hashes the source's bytes before resizing.
FINGERPRINT_VERSION = 2


# --------------------------------------------------------------------------- #
# Plan
# --------------------------------------------------------------------------- #

def split_objects(labels: Tensor, val_fraction: float, test_fraction: float,
                  seed: int) -> Dict[str, Tensor]:
    """Stratified split of object indices ``0..N-1`` into ``train``/``val``/``test``.

    Inside each class the objects are shuffled (``numpy`` generator seeded
    with ``seed``) and ``round(n_c * test_fraction)`` go to test,
    ``round(n_c * val_fraction)`` to val, the rest (at least one, when the
    class has any) to train. Returns sorted index tensors.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f'val_fraction={val_fraction} and test_fraction={test_fraction} must be '
                         f'in [0, 1) and sum to less than 1')
    rng = np.random.default_rng(seed)
    lab = labels.numpy()
    parts: Dict[str, List[np.ndarray]] = {s: [] for s in store.SPLITS}
    for c in np.unique(lab):     # a loop over classes, not samples
        ids = rng.permutation(np.flatnonzero(lab == c))
        n = len(ids)
        n_test = min(int(round(n * test_fraction)), max(n - 1, 0))
        n_val = min(int(round(n * val_fraction)), max(n - 1 - n_test, 0))
        parts['test'].append(ids[:n_test])
        parts['val'].append(ids[n_test:n_test + n_val])
        parts['train'].append(ids[n_test + n_val:])
    return {s: torch.from_numpy(np.sort(np.concatenate(p))).long() for s, p in parts.items()}


def fixed_splits(name: str, num_train: int, num_total: int, labels: Tensor,
                 seed: int = 0, val_fraction: float = 5000 / 60000) -> Dict[str, Tensor]:
    """The split of a source that has an official test set: ``test`` is the
    official test images (``num_train .. num_total - 1``), ``val`` the
    published validation list where one ships (:func:`~nngraph.data.sources.published_val`),
    else a stratified draw of ``val_fraction`` of the training images
    (:func:`split_objects`, seeded), ``train`` the other training images.
    """
    val = published_val(name)
    if val is None:
        val = split_objects(labels[:num_train], val_fraction, 0.0, seed)['val']
    elif val.numel() and int(val.max()) >= num_train:
        raise ValueError(f'the published {name} split lists validation image {int(val.max())} but '
                         f'the source has only {num_train} training images')
    is_val = torch.zeros(num_train, dtype=torch.bool)
    is_val[val] = True
    return {'train': (~is_val).nonzero().squeeze(1), 'val': val,
            'test': torch.arange(num_train, num_total)}


def inr_seed(seed: int, object_id: Tensor, view: Tensor) -> Tensor:
    """The initialisation seed of view ``view`` of object ``object_id``:
    ``seed * 2**40 + object_id * 2**16 + view`` (distinct for every object
    and view, independent of the split and of how many views are built)."""
    return int(seed) * (1 << 40) + object_id.long() * (1 << 16) + view.long()


def _fingerprint(images: Tensor, labels: Tensor) -> str:
    """First 16 hex digits of the SHA-256 of the images' and labels' bytes."""
    h = hashlib.sha256()
    h.update(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    return h.hexdigest()[:16]


def _limit_splits(splits: Dict[str, Tensor], limit: int) -> Dict[str, Tensor]:
    """The first objects of each split, ``limit`` in all, in proportion to the
    split sizes (at least one per non-empty split)."""
    total = sum(v.numel() for v in splits.values())
    return {s: v[:max(1, round(limit * v.numel() / total))] if v.numel() else v
            for s, v in splits.items()}


def _subset_splits(splits: Dict[str, Tensor], labels: Tensor,
                   objects_per_class: Dict[str, int]) -> Dict[str, Tensor]:
    """Each split cut to the ``objects_per_class[split]`` objects of lowest
    image index in every class; splits not named stay whole."""
    return {s: v[store.first_objects(v, labels[v], objects_per_class[s])] if s in objects_per_class else v
            for s, v in splits.items()}


def _per_class(objects_per_class: Union[int, Dict[str, int], None]) -> Optional[Dict[str, int]]:
    """``objects_per_class`` as ``{split: k}`` (an int applies to every split)."""
    if objects_per_class is None:
        return None
    k = objects_per_class if isinstance(objects_per_class, dict) else \
        {s: objects_per_class for s in store.SPLITS}
    unknown = sorted(set(k) - set(store.SPLITS))
    if unknown:
        raise ValueError(f'objects_per_class names unknown split(s) {unknown}; splits are {store.SPLITS}')
    bad = {s: v for s, v in k.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
    if bad:
        raise ValueError(f'objects_per_class must be positive integers, got {bad}')
    return {s: int(k[s]) for s in store.SPLITS if s in k}


def _views_per_object(obj: Tensor, labels: Tensor, views: int, multi: Optional[int]) -> Tensor:
    """Views of every object of a split: ``views`` for the first ``multi``
    objects of each class (all, when ``multi`` is ``None``), one for the others."""
    counts = torch.full((obj.numel(),), int(views), dtype=torch.long)
    if multi is not None:
        single = torch.ones(obj.numel(), dtype=torch.bool)
        single[store.first_objects(obj, labels[obj], int(multi))] = False
        counts[single] = 1
    return counts


def _plan(source: Source, views: int, seed: int, limit: Optional[int], opts: Dict[str, Any],
          source_dir=None, objects_per_class: Optional[Dict[str, int]] = None,
          views_objects_per_class: Optional[int] = None):
    if limit is not None and int(limit) < 1:
        raise ValueError(f'limit must be a positive number of images, got {limit}')
    if isinstance(source, str) and source in IDX_SOURCES:
        # An official test set: the split is fixed (the published one where it
        # ships); object ids stay idx positions, also under a limit.
        raw, labels, num_train = load_idx_source(source, source_dir)
        images, name = resize(raw, opts['grid']), source
        splits = fixed_splits(name, num_train, labels.numel(), labels, seed,
                              opts.get('val_fraction', 0.0))
        if limit is not None:
            splits = _limit_splits(splits, int(limit))
        split_kind = 'published' if name == 'fashion-mnist' else 'official-test'
    else:
        raw, labels, name = load_source(source, None)
        if limit is not None:
            raw, labels = raw[:int(limit)], labels[:int(limit)]
        images = resize(raw, opts['grid'])
        splits = split_objects(labels, opts['val_fraction'], opts['test_fraction'], seed)
        split_kind = 'stratified'
    if objects_per_class is not None:
        splits = _subset_splits(splits, labels, objects_per_class)
    if views_objects_per_class is not None and int(views_objects_per_class) < 1:
        raise ValueError(f'views_objects_per_class must be at least 1, got {views_objects_per_class}')
    if int(views) < 1:
        raise ValueError(f'views must be at least 1, got {views}')
    for k in ('val_views', 'test_views'):
        if int(opts[k]) < 1:
            raise ValueError(f'{k} must be at least 1, got {opts[k]}')
    if not (0 <= int(seed) < (1 << 22)):
        raise ValueError(f'seed must be in [0, 2**22), got {seed}')
    if int(opts['chunk_size']) < 1:
        raise ValueError(f'chunk_size must be positive, got {opts["chunk_size"]}')
    # The fingerprint hashes the source as read (uint8 / 255, or the user's
    # floats), not the resized images: resizing is float arithmetic whose last
    # bits may depend on the CPU's kernels, and the fingerprint decides whether
    # a build made on another machine is reused.
    settings = dict(source=name, source_fingerprint=_fingerprint(raw, labels),
                    fingerprint_version=FINGERPRINT_VERSION, views=int(views),
                    seed=int(seed), limit=None if limit is None else int(limit),
                    image_shape=list(images.shape[1:]), split=split_kind, **opts)
    if objects_per_class is not None:       # only when set: older builds' settings stay equal
        settings['objects_per_class'] = dict(objects_per_class)
    if views_objects_per_class is not None:
        settings['views_objects_per_class'] = int(views_objects_per_class)
    settings['hidden'] = [int(h) for h in settings['hidden']]
    settings['grid'] = None if opts['grid'] is None else int(opts['grid'])
    per_split = {'train': int(views), 'val': int(opts['val_views']), 'test': int(opts['test_views'])}
    rows = []   # (split index, object id, view) for every INR, in build order
    for s_i, s in enumerate(store.SPLITS):
        obj = splits[s]
        counts = _views_per_object(obj, labels, per_split[s], views_objects_per_class if s == 'train' else None)
        start = torch.cumsum(counts, 0) - counts          # each object's first row
        n = int(counts.sum())
        view = torch.arange(n) - start.repeat_interleave(counts)
        rows.append(torch.stack([torch.full((n,), s_i, dtype=torch.long), obj.repeat_interleave(counts), view]))
    table = torch.cat(rows, dim=1)             # [3, T]
    return images, labels, splits, per_split, settings, table


def _chunks(total: int, size: int) -> List[Tuple[int, int]]:
    return [(a, min(a + size, total)) for a in range(0, total, size)]


def _fit_rows(images: Tensor, table: Tensor, lo: int, hi: int, settings: Dict[str, Any],
              device) -> Dict[str, Tensor]:
    """Fits INRs ``lo..hi-1`` of the plan as one batch."""
    obj, view = table[1, lo:hi], table[2, lo:hi]
    H, W, C = images.shape[1:]
    signals = images[obj].reshape(hi - lo, H * W, C).to(device)
    coords = I.grid(H, W, device=device)
    res = I.fit(signals, coords, views=1, hidden=settings['hidden'], w0=settings['w0'],
                first_w0=settings['first_w0'], init=settings['init'],
                output_offset=settings['output_offset'], steps=settings['steps'], lr=settings['lr'],
                target_psnr=settings['target_psnr'],
                seeds=inr_seed(settings['seed'], obj, view).unsqueeze(1), progress=False)
    part = dict(weights=[w.cpu() for w in res.weights], biases=[b.cpu() for b in res.biases],
                psnr=res.psnr.float().cpu(), steps=res.steps.cpu(), seeds=res.seeds.cpu())
    _check_converged(part, table, lo, settings)
    return part


def _check_converged(part: Dict[str, Tensor], table: Tensor, lo: int, settings: Dict[str, Any]) -> None:
    """Refuses to record a chunk in which a fit diverged: non-finite weights
    or biases, or a loss that is not finite (PSNR NaN or -inf; +inf is a
    perfect fit). The image index, view and split of the first such INR are
    named. One whole-tensor test per parameter tensor; details only on failure."""
    params = part['weights'] + part['biases']
    psnr = part['psnr']
    if all(bool(torch.isfinite(t).all()) for t in params) and bool((psnr > float('-inf')).all()):
        return
    finite = torch.stack([torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1) for t in params]).all(dim=0)
    k = int((~(finite & (psnr > float('-inf')))).nonzero()[0])
    split, obj, view = (int(v) for v in table[:, lo + k])
    what = 'non-finite weights' if not bool(finite[k]) else f'a non-finite loss (PSNR {float(psnr[k])})'
    raise ValueError(f'the fit of image {obj} (view {view}, {store.SPLITS[split]} split, INR {lo + k} of '
                     f'the build) diverged: {what} with lr={settings["lr"]}, steps={settings["steps"]}; '
                     f'nothing was recorded for it. Lower lr (or check the image)')


def _load_chunk(path: str, settings_json: str, table: Tensor, a: int, b: int) -> Optional[Dict[str, Tensor]]:
    """The finished chunk ``[a, b)`` a killed build left at ``path``, or
    ``None`` when there is none, or it is unreadable, corrupt (checksum) or
    from other settings: a partial chunk is only a cache, refitting it is
    always right."""
    rec = store.cached_sealed(path, 'partial chunk')
    if rec is None or rec.get('kind') != 'chunk' or rec.get('settings') != settings_json \
            or (rec.get('lo'), rec.get('hi')) != (a, b) or not torch.equal(rec['table'], table[:, a:b]):
        return None
    return {k: rec[k] for k in ('weights', 'biases', 'psnr', 'steps', 'seeds')}


def _save_chunk(path: str, part: Dict[str, Tensor], settings_json: str, table: Tensor, a: int, b: int) -> None:
    store.save_torch(path, store.seal(dict(
        format=store.FORMAT, format_version=store.FORMAT_VERSION, kind='chunk', lo=a, hi=b,
        settings=settings_json, table=table[:, a:b].clone(), **part)))


def _fit_chunks(images, table, chunks, settings, device, progress, out: Optional[str] = None, *,
                stop: Optional[Callable[[], bool]] = None, desc: str = 'fitting INRs',
                position: Optional[int] = None) -> List[Dict[str, Tensor]]:
    """Fits the chunks one after the other, with one progress bar over all INRs.

    With ``out``, every finished chunk is saved (atomically, checksummed) to
    ``out/.partial/``, and a chunk found there from the same settings is
    loaded instead of refitted: a killed build resumes where it stopped, and
    since every INR's fit depends only on its chunk, the result is bit for bit
    the uninterrupted build's. A worker passes ``stop``
    (:func:`~nngraph.data.workspace.stopping`): once it says so, the chunks
    not started are left out (another worker failed; its caller raises)."""
    from tqdm.auto import tqdm
    total = sum(b - a for a, b in chunks)
    settings_json = json.dumps(settings, sort_keys=True)
    parts = []
    with tqdm(total=total, desc=desc, unit='INR', disable=not progress, position=position) as bar:
        for a, b in chunks:
            if stop is not None and stop():
                break
            path = None if out is None else chunk_path(out, a, b)
            part = None if path is None else _load_chunk(path, settings_json, table, a, b)
            if part is None:
                part = _fit_rows(images, table, a, b, settings, device)
                if path is not None:
                    _save_chunk(path, part, settings_json, table, a, b)
            parts.append(part)
            bar.update(b - a)
            bar.set_postfix(psnr=f'{float(torch.cat([p["psnr"] for p in parts]).mean()):.1f}dB')
    return parts


def _cat(parts: Sequence[Dict[str, Tensor]]) -> Dict[str, Any]:
    L = len(parts[0]['weights'])
    return dict(weights=[torch.cat([p['weights'][l] for p in parts]) for l in range(L)],
                biases=[torch.cat([p['biases'][l] for p in parts]) for l in range(L)],
                psnr=torch.cat([p['psnr'] for p in parts]), steps=torch.cat([p['steps'] for p in parts]),
                seeds=torch.cat([p['seeds'] for p in parts]))


def _config(settings: Dict[str, Any], channels: int) -> I.SirenConfig:
    return I.SirenConfig(layer_sizes=(2, *settings['hidden'], channels), w0=settings['w0'],
                         first_w0=settings['first_w0'], init=settings['init'],
                         output_offset=settings['output_offset'])


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #

def _write_splits(out: str, images: Tensor, labels: Tensor, splits: Dict[str, Tensor],
                  per_split: Dict[str, int], settings: Dict[str, Any], table: Tensor,
                  fitted: Dict[str, Any]) -> None:
    config = _config(settings, images.shape[-1])
    manifest_path = os.path.join(out, store.MANIFEST)
    if os.path.exists(manifest_path):
        # The old manifest must not vouch for a half-replaced directory.
        os.unlink(manifest_path)
    entries = {}
    for s_i, s in enumerate(store.SPLITS):
        sel = (table[0] == s_i).nonzero().squeeze(1)
        obj = table[1, sel]
        record = dict(
            format=store.FORMAT, format_version=store.FORMAT_VERSION, split=s,
            weights=[w[sel].contiguous() for w in fitted['weights']],
            biases=[b[sel].contiguous() for b in fitted['biases']],
            y=labels[obj].clone(), object_id=obj.clone(), view_id=table[2, sel].clone(),
            psnr=fitted['psnr'][sel].clone(), steps=fitted['steps'][sel].clone(),
            seeds=fitted['seeds'][sel].clone(),
            images=images[splits[s]].clone(), image_object_id=splits[s].clone(),
            activation=config.activation if isinstance(config.activation, str) else list(config.activation),
            convention=config.convention, layer_sizes=list(config.layer_sizes),
            settings=json.dumps(settings, sort_keys=True))
        path = os.path.join(out, f'{s}.pt')
        store.save_torch(path, record)
        entries[s] = dict(file=f'{s}.pt', bytes=os.path.getsize(path), sha256=store.sha256(path),
                          num_inrs=int(sel.numel()), num_objects=int(splits[s].numel()),
                          views=per_split[s],
                          psnr_mean=float(record['psnr'].mean()) if sel.numel() else None,
                          psnr_min=float(record['psnr'].min()) if sel.numel() else None)
    manifest = dict(format=store.FORMAT, format_version=store.FORMAT_VERSION, settings=settings,
                    splits=entries, layer_sizes=list(config.layer_sizes),
                    activation=config.activation if isinstance(config.activation, str) else list(config.activation),
                    convention=config.convention, num_classes=int(labels.max()) + 1)
    store.write_json(manifest_path, manifest)


def _compatible(old: Dict[str, Any], new: Dict[str, Any], legacy_fingerprint=None) -> List[str]:
    """Settings that differ, except that an old build with more train views
    serves a request for fewer (the first views of every object are the same).

    A build from before :data:`FINGERPRINT_VERSION` 2 fingerprinted the
    resized images: ``legacy_fingerprint()`` computes that, so such a build
    is still recognised (and reused) when its source is the same."""
    old = {'split': 'stratified', **old}     # builds from before fixed splits existed
    if 'fingerprint_version' not in old and legacy_fingerprint is not None:
        same = old.get('source_fingerprint') == legacy_fingerprint()
        old = dict(old, fingerprint_version=new['fingerprint_version'],
                   source_fingerprint=new['source_fingerprint'] if same else old.get('source_fingerprint'))
    diff = [k for k in sorted(set(old) | set(new)) if k != 'views' and old.get(k) != new.get(k)]
    if old.get('views', 0) < new['views']:
        diff.append('views')
    return diff


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #

def defaults_for(source: Source) -> Dict[str, Any]:
    """The build settings a source gets unless told otherwise
    (:data:`DEFAULTS` for digits and user arrays, :data:`FMNIST_DEFAULTS` for
    Fashion-MNIST, ...)."""
    name = source if isinstance(source, str) else 'custom'
    return dict(SOURCE_DEFAULTS.get(name, DEFAULTS))


def data_root(name: str = '') -> str:
    """Where builds go unless told otherwise: ``$NNGRAPH_DATA_ROOT`` or
    ``~/.cache/nngraph``, then ``name``. Outside the checkout, so a fresh
    clone reuses a long build."""
    root = os.environ.get(DATA_ROOT_ENV) or os.path.join('~', '.cache', 'nngraph')
    return os.path.join(os.path.expanduser(root), name)


def _options(source: Source, settings: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
    """``(views, opts)``: the source's defaults updated by ``settings``, typed."""
    defaults = defaults_for(source)
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        name = source if isinstance(source, str) else 'user arrays'
        fixed = [k for k in unknown if k in DEFAULTS]
        why = (f'; {name} has a fixed split (validation and test are given), so '
               f'{", ".join(fixed)} do(es) not apply') if fixed else ''
        raise TypeError(f'unknown build setting(s) {unknown} for source {name!r}{why}; '
                        f'valid: {sorted(defaults)}')
    o = {**defaults, **settings}
    typed = dict(grid=setting(o, 'grid', int, 1, optional=True),
                 val_views=setting(o, 'val_views', int, 1), test_views=setting(o, 'test_views', int, 1),
                 hidden=_hidden(o['hidden']),
                 w0=setting(o, 'w0', float), first_w0=setting(o, 'first_w0', float, optional=True),
                 init=o['init'], output_offset=setting(o, 'output_offset', float),
                 steps=setting(o, 'steps', int, 1), lr=setting(o, 'lr', float, 0.0, open_low=True),
                 target_psnr=setting(o, 'target_psnr', float, optional=True),
                 chunk_size=setting(o, 'chunk_size', int, 1))
    for k in ('val_fraction', 'test_fraction'):
        if k in o:
            typed[k] = setting(o, k, float, 0.0)
    I.SirenConfig(layer_sizes=(2, *typed['hidden'], 1), w0=typed['w0'], first_w0=typed['first_w0'],
                  init=typed['init'], output_offset=typed['output_offset'])   # validates up front
    return int(o['views']), typed


def _hidden(value: Any) -> Tuple[int, ...]:
    """The hidden widths as positive integers, or a ``ValueError`` naming them."""
    try:
        if isinstance(value, (str, bytes)) or any(isinstance(h, bool) for h in value):
            raise TypeError
        hidden = tuple(operator.index(h) for h in value)       # ints (numpy's too), no floats
        if any(h < 1 for h in hidden):
            raise TypeError
    except TypeError:
        raise ValueError(f'build setting hidden={value!r} must be a sequence of positive '
                         f'integers') from None
    return hidden


def build_inr_dataset(
    source: Source = 'digits',
    views: Optional[int] = None,
    out: Union[str, os.PathLike, None] = None,
    seed: int = 0,
    limit: Optional[int] = None,
    *,
    source_dir: Union[str, os.PathLike, None] = None,
    shard: Optional[Tuple[int, int]] = None,
    workers: Optional[int] = None,
    distributed: bool = False,
    objects_per_class: Union[int, Dict[str, int], None] = None,
    views_objects_per_class: Optional[int] = None,
    overwrite: bool = False,
    device: Union[str, torch.device, None] = None,
    threads: Optional[int] = 1,
    progress: bool = True,
    **settings: Any,
) -> str:
    """Builds a multi-view INR dataset in ``out`` and returns ``out``.

    Splits the source's images by object (stratified by class, or the
    source's fixed split: see below), fits ``views`` SIRENs per training
    image and ``val_views`` / ``test_views`` per validation / test image
    (:func:`nngraph.inr.fit`, batched, every INR from its own seed), and
    writes one file per split plus ``manifest.json``
    (:mod:`nngraph.data.store`), all atomically. Read it with
    :class:`nngraph.data.INRGraphDataset`.

    A complete build already in ``out`` is reused (no refitting, no lock, so
    a read-only build serves) when its settings equal these, or differ only
    by having *more* train views (the first ``views`` of every object are the
    same networks, see :func:`inr_seed`). A build with other settings raises
    ``ValueError`` naming them, unless ``overwrite=True`` (then it is rebuilt).

    Otherwise ``out`` is created and locked (``out/.lock``) before fitting,
    and every finished chunk is kept in ``out/.partial/`` until the build is
    complete, so a killed build rerun with the same settings fits only what
    was not finished (module docstring).

    Args:
        source: ``'digits'``, ``'fashion-mnist'``, ``'mnist'`` or
            ``(images, labels)`` (see :mod:`nngraph.data.sources`).
            ``fashion-mnist`` has the published FMNIST-INR split (DWSNets,
            neural-graphs): test the official 10,000 test images, val the
            5,000 listed training images, train the other 55,000; ``mnist``
            has the official test images and a stratified validation draw.
        views: INRs per training image (the paper's knob); default the source's.
        out: dataset directory (``~`` expanded); default :func:`data_root` ``/<source>``.
        seed: seeds the split (where it is drawn) and every INR's initialisation.
        limit: use only ``limit`` images (tests, smoke runs): the first ones,
            or for a fixed split the first of each split in proportion.
        source_dir: where an idx source's files are (``fashion-mnist``, ``mnist``).
        objects_per_class: build only the first ``k`` objects (lowest image
            indices) of every class: the low-data regime of a study;
            an int for every split or ``{split: k}`` for some
            (e.g. ``{'train': 500, 'val': 100, 'test': 200}``).
        views_objects_per_class: give all ``views`` only to the first
            ``m`` training objects of every class, one view to the others
            (a views-vs-objects study without fitting views nobody reads);
            :class:`~nngraph.data.INRGraphDataset` then refuses ``views > 1``
            unless ``objects_per_class <= m``.
        shard: ``(i, n)``: fit only the ``i``-th of ``n`` disjoint slices and
            write ``out/shards/shard-i-of-n.pt`` (returns that path); join the
            shards with :func:`merge_shards`.
        workers: fit in ``workers`` processes of this machine (``spawn``:
            each imports the calling script, so a script that builds with
            workers keeps its code under ``if __name__ == '__main__':``),
            worker ``k`` the ``k``-th of ``workers`` slices of the chunks with
            ``threads`` threads, then write the complete build: the same
            files as one process writes, bit for bit. ``out`` is locked and
            every finished chunk kept as in a one-process build, so a rerun
            resumes; a failed worker stops the others after their current
            chunk and raises a ``ValueError`` naming its slice. Default 1
            (this process). Not with ``shard``.
        distributed: this process is one rank of ``torchrun`` (one machine or
            several sharing ``out``'s filesystem): rank ``r`` of ``w`` fits
            slice ``r/w`` (split further over its ``workers``), and rank 0,
            which holds ``out``'s lock for all of them, writes the complete
            build once every rank has finished; every rank returns then, or
            raises when any failed (the failed ranks named). A gloo process
            group (:func:`~nngraph.data.workspace.rank_group`); ``cuda``
            means each rank's ``LOCAL_RANK`` device. Not with ``shard``.
        overwrite: rebuild from scratch: over a complete build (with other
            settings or the same), discarding the finished chunks of an
            interrupted one.
        device: where to fit (default CPU).
        threads: CPU threads while fitting (restored afterwards); ``None``
            leaves torch's setting. Default 1: the many small batched matmuls
            gain little from a second thread and lose up to 10x when the
            cores are shared with other processes (measured, see the
            report); use ``workers`` (or shards) to use more cores.
        progress: tqdm progress bars.
        **settings: override the source's defaults (:func:`defaults_for`):
            ``grid`` (resize to ``grid x grid``, ``None`` native), ``val_views``,
            ``test_views``, ``val_fraction`` / ``test_fraction`` (stratified
            splits), ``hidden``, ``w0``, ``first_w0``, ``init``,
            ``output_offset`` (SIREN conventions, :class:`nngraph.inr.SirenConfig`),
            ``steps``, ``lr``, ``target_psnr`` (fitting budget, Adam step,
            early stop in dB), ``chunk_size`` (INRs fitted as one batch).

    Raises:
        TypeError: a setting the source does not have (named).
        FileNotFoundError: an idx source's files missing (directory and
            install command named).
        ValueError: unknown source, empty source, images of mixed sizes,
            ``views < 1``, a bad shard spec, ``workers`` with ``shard``, an
            incompatible existing build, a failed worker or rank (named),
            a fitting setting that is not finite or not positive (named), an
            ``out`` that cannot be written (named, before fitting), a fit that
            diverged (the image named).
        LockHeldError: (a ``ValueError``) another build is writing ``out``
            (or this shard); the lock file and its holder are named.
    """
    if shard is not None:
        shard = parse_shard(shard)
        if workers is not None or distributed:
            raise ValueError(f'shard={shard[0]}/{shard[1]} (--shard) builds one slice in this process; '
                             + ('a distributed build (torchrun) takes its slice from its rank'
                                if distributed else f'workers={workers} (--workers) builds every slice and '
                                'joins them') + ': pass one of the two')
    workers = _workers(workers)
    out = os.path.expanduser(os.fspath(out)) if out is not None else \
        data_root(source if isinstance(source, str) else 'custom')
    device = torch.device(device) if device is not None else torch.device('cpu')
    if distributed and device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))

    def plan() -> _Build:
        default_views, opts = _options(source, settings)
        images, labels, splits, per_split, plan_settings, table = _plan(
            source, default_views if views is None else views, seed, limit, opts, source_dir,
            _per_class(objects_per_class), views_objects_per_class)
        plan_settings = json.loads(json.dumps(plan_settings))   # the form it has after a JSON round trip
        return _Build(out, images, labels, splits, per_split, plan_settings, table,
                      _chunks(table.shape[1], plan_settings['chunk_size']), overwrite, device, threads, progress)

    if distributed:
        return _build_as_rank(out, plan, workers)
    b = plan()
    if shard is not None:
        return b.shard(*shard)
    # A complete build is reused without the lock (it may be read-only).
    if b.reusable():
        return out
    with b.writing() as todo:
        if todo:
            if workers > 1:          # the chunks into out/.partial, which write() then reads
                b.fit(b.chunks, workers)
            b.write()
    return out


def _workers(workers: Optional[int]) -> int:
    """``workers`` as a positive number of processes (``None``: 1)."""
    if workers is None:
        return 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f'workers must be a positive number of processes, got {workers!r}')
    return workers


@dataclasses.dataclass
class _Build:
    """One build's plan (a pure function of its settings, so every process and
    machine computes the same) and where and how it is fitted: what the
    one-process build, its workers, and torchrun's ranks share."""
    out: str
    images: Tensor
    labels: Tensor
    splits: Dict[str, Tensor]
    per_split: Dict[str, int]
    settings: Dict[str, Any]
    table: Tensor                       # [3, T]: split, object id, view of every INR, in build order
    chunks: List[Tuple[int, int]]       # INR ranges fitted as one batch each
    overwrite: bool
    device: torch.device
    threads: Optional[int]
    progress: bool

    def reusable(self) -> bool:
        """Whether a complete build with these settings is already in ``out``."""
        if self.overwrite or not os.path.exists(os.path.join(self.out, store.MANIFEST)):
            return False
        old = store.read_manifest(self.out)['settings']
        legacy = lambda: _fingerprint(self.images, self.labels)    # noqa: E731 (builds of old versions only)
        refuse_other_settings(self.out, 'an INR dataset', old, self.settings,
                              _compatible(old, self.settings, legacy))
        return True

    def writing(self):
        """:func:`~nngraph.data.workspace.rewriting` of the complete build:
        locks ``out``; yields whether there is work to do."""
        targets = [os.path.join(self.out, f) for f in (*(f'{s}.pt' for s in store.SPLITS), store.MANIFEST)]
        # overwrite really rebuilds: finished chunks of an earlier run go too
        return rewriting(self.out, self.out, LOCK, f'the INR dataset directory {self.out!r}', self.chunks,
                         targets, self.overwrite, self.reusable)

    def fit(self, chunks: Sequence[Tuple[int, int]], workers: int, of: str = '') -> None:
        """Fits ``chunks`` into ``out/.partial`` (those there already are
        kept): here when ``workers`` is 1, else split into ``workers``
        contiguous slices, slice ``k`` fitted by a process of its own
        (:func:`~nngraph.data.workspace.in_workers`); ``of`` completes the
        slices' names in an error. The caller holds ``out``'s lock."""
        n = min(workers, len(chunks))
        if n <= 1:
            self.fit_here(chunks)
            return
        slices = [shard_slice(chunks, k, n) for k in range(n)]
        names = [f'worker {k} of {n} (shard {k}/{n}{of}, INRs {c[0][0]}-{c[-1][1] - 1}) of {self.out!r}'
                 for k, c in enumerate(slices)]
        in_workers(_fit_in_worker, [(self, c, f'shard {k}/{n}{of}', k) for k, c in enumerate(slices)], names)

    def fit_here(self, chunks: Sequence[Tuple[int, int]], **kw) -> List[Dict[str, Tensor]]:
        """:func:`_fit_chunks` of ``chunks`` in this process, with the build's
        threads, into ``out/.partial`` (a chunk there already is read, not
        refitted); ``kw``: its ``stop``, ``desc``, ``position``."""
        with I.num_threads(self.threads):
            return _fit_chunks(self.images, self.table, chunks, self.settings, self.device, self.progress,
                               self.out, **kw)

    def write(self) -> None:
        """The split files and manifest of the complete build, from every
        chunk: those in ``out/.partial`` are read, the others fitted here."""
        parts = self.fit_here(self.chunks)
        _write_splits(self.out, self.images, self.labels, self.splits, self.per_split, self.settings,
                      self.table, _cat(parts))

    def missing_chunks(self) -> List[str]:
        """The chunk files not in ``out/.partial`` (after every rank fitted its slice)."""
        return [p for p in (chunk_path(self.out, a, b) for a, b in self.chunks) if not os.path.exists(p)]

    def shard(self, i: int, n: int) -> str:
        """Fits shard ``i/n`` and writes ``out/shards/shard-i-of-n.pt`` (sealed); returns its path."""
        mine = shard_slice(self.chunks, i, n)
        lo = mine[0][0] if mine else 0
        hi = mine[-1][1] if mine else 0
        name = f'shard-{i}-of-{n}'
        path = os.path.join(self.out, 'shards', f'{name}.pt')
        # Shards of one build run side by side: each locks its own file.
        with rewriting(self.out, os.path.join(self.out, 'shards'), f'.{name}.lock',
                       f'shard {i}/{n} of {self.out!r}', mine, [path], self.overwrite,
                       lambda: _shard_done(path, self.settings, self.table)) as todo:
            if not todo:
                return path
            parts = self.fit_here(mine)
            record = dict(format=store.FORMAT, format_version=store.FORMAT_VERSION, kind='shard',
                          shard=i, num_shards=n, lo=lo, hi=hi, total=int(self.table.shape[1]),
                          settings=json.dumps(self.settings, sort_keys=True),
                          images=self.images, labels=self.labels, table=self.table,
                          **(_cat(parts) if parts else dict(weights=[], biases=[], psnr=torch.zeros(0),
                                                             steps=torch.zeros(0, dtype=torch.long),
                                                             seeds=torch.zeros(0, dtype=torch.long))))
            store.save_torch(path, store.seal(record))     # merge_shards verifies the checksum
        return path


def _fit_in_worker(job: Tuple[_Build, List[Tuple[int, int]], str, int]) -> None:
    """A worker's part of a build (:meth:`_Build.fit`): its chunks into ``out/.partial``."""
    b, chunks, desc, position = job
    b.fit_here(chunks, stop=stopping, desc=desc, position=position)


def _build_as_rank(out: str, plan: Callable[[], _Build], workers: int) -> str:
    """The build as one rank of torchrun's (``build_inr_dataset(distributed=True)``),
    in three steps that every rank finishes before any starts the next
    (:func:`~nngraph.data.workspace.every_rank`): plan, and rank 0 locks
    ``out`` for everyone (or finds the build done); each rank fits its slice
    of the chunks into ``out/.partial``; rank 0 writes the complete build from
    them."""
    with rank_group() as (rank, world, group), contextlib.ExitStack() as held:
        mine: Dict[str, _Build] = {}
        name = lambda r: f'rank {r} of {world} (shard {r}/{world}) of the build in {out!r}'   # noqa: E731

        def start() -> bool:
            mine['b'] = b = plan()
            # Rank 0 holds the root's lock (and cleans what a killed run left)
            # for every rank, before any of them fits.
            return rank == 0 and not b.reusable() and held.enter_context(b.writing())

        todo = every_rank(start, name, group)[0]
        b = mine['b']
        if todo:
            every_rank(lambda: b.fit(shard_slice(b.chunks, rank, world), workers, of=f' of rank {rank}'),
                       name, group)

            def finish() -> None:
                if rank == 0:
                    missing = b.missing_chunks()
                    if missing:
                        raise ValueError(f'every rank finished, but {len(missing)} chunk file(s) are not in '
                                         f'{os.path.join(b.out, PARTIAL)!r} here (first: {missing[0]!r}): '
                                         f'ranks on several machines need one shared filesystem for out')
                    b.write()
                    held.close()          # the lock goes, and the chunks, once the build is written
            every_rank(finish, name, group)
        return out


def _shard_done(path: str, settings: Dict[str, Any], table: Tensor) -> bool:
    """Whether ``path`` already holds this shard, complete, intact (checksum)
    and of these settings: rerunning a finished shard does not refit it."""
    rec = store.cached_sealed(path, 'shard file')
    return (rec is not None and rec.get('settings') == json.dumps(settings, sort_keys=True)
            and torch.equal(rec['table'], table))


def merge_shards(out: Union[str, os.PathLike]) -> str:
    """Joins ``out/shards/shard-*-of-n.pt`` into the split files and manifest
    of a complete build (identical to a one-shot build with the same settings).

    Every shard is checked before anything is written: a shard whose
    contents differ from the checksum it was written with (a flipped bit) is
    refused, so the merged split files never vouch for corrupt weights.

    Raises:
        ValueError: no shard files; shards of different builds or shard
            counts; a missing shard; a truncated or corrupt shard file (bad
            checksum); a shard whose INR range is not the one its index
            implies (a partial shard). Every message names the shard file.
        LockHeldError: another build or merge is writing ``out`` (named).
    """
    out = os.path.expanduser(os.fspath(out))
    if not os.path.isdir(os.path.join(out, 'shards')):
        raise ValueError(f'no shard files in {os.path.join(out, "shards")!r}')
    with writer(out, LOCK, f'the INR dataset directory {out!r}'):
        _merge(out)
    return out


def _merge(out: str) -> None:
    paths = sorted(glob.glob(os.path.join(out, 'shards', 'shard-*-of-*.pt')))
    if not paths:
        raise ValueError(f'no shard files in {os.path.join(out, "shards")!r}')
    shards = {}
    counts = set()
    for p in paths:
        m = _SHARD_RE.search(os.path.basename(p))
        if m is None:
            continue
        rec = store.load_sealed(p, 'shard file')       # a flipped bit must not get a fresh sha256
        if rec.get('kind') != 'shard' or rec.get('shard') != int(m.group(1)) \
                or rec.get('num_shards') != int(m.group(2)):
            raise ValueError(f'shard file {p!r} does not hold shard {m.group(1)}/{m.group(2)}')
        counts.add(rec['num_shards'])
        shards[rec['shard']] = (p, rec)
    if len(counts) != 1:
        raise ValueError(f'shard files in {out!r} come from builds split {sorted(counts)} ways; '
                         f'remove the stale ones')
    n = counts.pop()
    missing = [i for i in range(n) if i not in shards]
    if missing:
        raise ValueError(f'cannot merge: shard file(s) '
                         f'{", ".join(f"shard-{i}-of-{n}.pt" for i in missing)} missing in '
                         f'{os.path.join(out, "shards")!r}')
    p0, first = shards[0]
    settings_json = first['settings']
    total = first['total']
    chunks = _chunks(total, json.loads(settings_json)['chunk_size'])
    parts = []
    for i in range(n):
        p, rec = shards[i]
        if rec['settings'] != settings_json or not torch.equal(rec['table'], first['table']):
            raise ValueError(f'shard file {p!r} was built with other settings than {p0!r}')
        mine = shard_slice(chunks, i, n)
        lo = mine[0][0] if mine else 0
        hi = mine[-1][1] if mine else 0
        got = rec['psnr'].numel()
        if (rec['lo'], rec['hi']) != (lo, hi) or got != hi - lo \
                or any(w.shape[0] != hi - lo for w in rec['weights'] + rec['biases']):
            raise ValueError(f'shard file {p!r} is partial: it holds {got} INRs for range '
                             f'[{rec["lo"]}, {rec["hi"]}), expected [{lo}, {hi})')
        if got:
            parts.append(rec)
    settings = json.loads(settings_json)
    images, labels, table = first['images'], first['labels'], first['table']
    splits = {s: torch.unique(table[1, table[0] == k]) for k, s in enumerate(store.SPLITS)}
    per_split = {'train': settings['views'], 'val': settings['val_views'], 'test': settings['test_views']}
    for f in (*(f'{s}.pt' for s in store.SPLITS), store.MANIFEST):
        remove_stale_temp_files(os.path.join(out, f))
    _write_splits(out, images, labels, splits, per_split, settings, table, _cat(parts))
