"""Building a model zoo: chunks of networks trained as batches, shards, merge, resume.

A build (:func:`build_zoo`) plans the zoo (:mod:`nngraph.zoo.plan`), trains
its chunks one after the other (:func:`nngraph.zoo.fitting.train_networks`,
one batch per chunk) and writes ``DIR/zoo.pt`` and ``DIR/manifest.json``. It
keeps the promises of the INR builder (:mod:`nngraph.data.build`), with its
helpers:

* settings are checked before anything is loaded or trained, and ``DIR`` is
  created and locked (``DIR/.lock``) before training: an unwritable root
  fails at once, a second build or merge of the same root refuses;
* every finished chunk is saved, atomically and checksummed, to
  ``DIR/.partial/``: a killed build rerun with the same settings trains only
  the chunks it had not finished, and its result is bit for bit the
  uninterrupted build's (a network depends only on the seed and its run id);
* ``shard=(i, n)`` trains the ``i``-th of ``n`` contiguous slices of chunks
  into ``DIR/shards/shard-i-of-n.pt`` (sealed with a checksum);
  :func:`merge_zoo_shards` verifies them all, then writes the same files a
  one-shot build writes;
* a chunk in which a network diverged (non-finite weights or loss) is
  refused, naming the run and its hyperparameters.

``zoo.pt`` (``torch.load(weights_only=True)``) holds one dict: ``settings``
(JSON), ``activations`` (the activation strings), ``architectures`` (a list,
one per (depth, width, activation) present: ``layer_sizes``, ``activation``,
``weights`` ``[n_a, d_{l+1}, d_l]`` and ``biases`` ``[n_a, d_{l+1}]`` per
layer, the checkpoints of that architecture stacked), ``checkpoints`` (a
table of columns ``[K]`` sorted by (run, epoch): ``run_id``, ``epoch``,
``architecture`` and ``position`` (where its weights are), ``train_acc``,
``train_loss``, ``test_acc``, ``test_loss``), ``runs`` (columns
``[networks]``: ``run_id`` and :data:`~nngraph.zoo.plan.RUN_FIELDS`),
``test_x``/``test_y`` (the test images as the networks read them, so any
checkpoint's accuracy can be recomputed), ``train_ids``/``test_ids`` (image
positions in the source), ``num_classes`` and a ``sha256`` seal.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from nngraph._atomic import atomic_path, remove_stale_temp_files
from nngraph.data import store
from nngraph.data.build import data_root
from nngraph.data.workspace import LOCK, chunk_path, parse_shard, refuse_other_settings, rewriting, setting, writer
from nngraph.graph import read_weights_only
from nngraph.inr.fitting import num_threads
from nngraph.zoo import plan as P
from nngraph.zoo.fitting import train_networks

__all__ = ['build_zoo', 'merge_zoo_shards', 'read_zoo', 'zoo_root', 'ZOO_FILE', 'FORMAT', 'FORMAT_VERSION']

FORMAT = 'nngraph-zoo'
FORMAT_VERSION = 1
ZOO_FILE = 'zoo.pt'
# Bumped whenever training changes what a network becomes: it is part of the
# settings, so an older zoo or a finished chunk of an older trainer is not reused.
TRAINER_VERSION = 1
_SHARD_RE = re.compile(r'shard-(\d+)-of-(\d+)\.pt$')
_METRICS = ('train_acc', 'train_loss', 'test_acc', 'test_loss')
_META = ('runs', 'test_x', 'test_y', 'train_ids', 'test_ids', 'num_classes')   # zoo.pt beside the networks


def zoo_root(source: str) -> str:
    """Where a zoo of ``source`` goes unless told: :func:`nngraph.data.build.data_root`
    ``/zoo-<source>`` (``$NNGRAPH_DATA_ROOT`` or ``~/.cache/nngraph``)."""
    return data_root(f'zoo-{source}')


# --------------------------------------------------------------------------- #
# Files
# --------------------------------------------------------------------------- #

def _save(path: str, record: Dict[str, Any]) -> None:
    """Seals ``record`` and saves it atomically, so that equal contents give
    equal bytes (a merged zoo is byte for byte the one-shot build): through a
    file object, since ``torch.save`` names the archive's entries after the
    file and the temp file's name is random; and with every string interned,
    since pickle writes a string seen before as a back-reference, and whether
    two equal strings are one object depends on the path they came by
    (trained here, or loaded from a shard)."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        torch.save(_interned(store.seal(record)), f)


def _interned(value: Any) -> Any:
    """``value`` with every string (keys too) replaced by its interned copy."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k): _interned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_interned(v) for v in value)
    return value


# --------------------------------------------------------------------------- #
# Reading files this module wrote
# --------------------------------------------------------------------------- #

def _load(path: str, what: str, kind: str) -> Dict[str, Any]:
    """A sealed zoo file of ``kind``, checked (weights-only, format, checksum);
    every failure a ``ValueError`` naming the file."""
    rec = read_weights_only(path, f'a {what}')
    if not isinstance(rec, dict) or rec.get('format') != FORMAT or rec.get('kind') != kind:
        raise ValueError(f'{what} {path!r} is not an nngraph zoo {kind} file')
    if rec.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{what} {path!r} has format version {rec.get("format_version")}, '
                         f'this nngraph reads version {FORMAT_VERSION}')
    store.check_seal(rec, path, what)
    return rec


def read_manifest(root: str) -> Dict[str, Any]:
    """The manifest of a complete zoo in ``root``.

    Raises:
        FileNotFoundError: no ``root``, or no manifest (an unfinished build; the command named).
        ValueError: a manifest that cannot be read or is not a zoo's.
    """
    return store.read_manifest(root, what='model zoo', fmt=FORMAT, version=FORMAT_VERSION,
                               how=f'build it with python -m nngraph.zoo build SOURCE --root {root}')


def read_zoo(root: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The contents of a complete zoo (module docstring), checked against its
    manifest (size, sha256) and its own seal.

    Raises:
        FileNotFoundError: no complete zoo in ``root``.
        ValueError: a truncated, replaced or corrupt ``zoo.pt`` (named).
    """
    root = os.path.expanduser(os.fspath(root))
    entry = read_manifest(root)['files'][ZOO_FILE]
    path = os.path.join(root, ZOO_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path!r} is missing from the zoo in {root!r}')
    if os.path.getsize(path) != entry['bytes'] or store.sha256(path) != entry['sha256']:
        raise ValueError(f'{path!r} is truncated, corrupt or was replaced: its size or sha256 '
                         f'differs from the manifest; rebuild the zoo')
    return _load(path, 'zoo file', 'zoo')


# --------------------------------------------------------------------------- #
# Plan and chunks
# --------------------------------------------------------------------------- #

def _plan(source: str, seed: int, settings: Dict[str, Any], source_dir) -> Tuple[Dict, Dict, Dict, List[Tensor]]:
    """``(settings, data, runs, chunks)``: settings typed and JSON-normal."""
    if source not in P.SOURCES:
        raise ValueError(f'unknown zoo source {source!r}; choose one of {", ".join(P.SOURCES)}')
    opts = P.check_settings(source, settings)
    seed = setting(dict(seed=seed), 'seed', int, 0)
    if seed >= 1 << 31:
        raise ValueError(f'seed must be in [0, 2**31), got {seed}')
    data = P.zoo_images(source, opts, seed, source_dir)
    full = dict(source=source, seed=seed, trainer_version=TRAINER_VERSION, source_fingerprint=data['fingerprint'],
                num_train=int(data['train_y'].numel()), num_test=int(data['test_y'].numel()),
                num_features=int(data['train_x'].shape[1]), image_shape=data['image_shape'], **opts)
    full = json.loads(json.dumps(full))      # the form it has after a JSON round trip
    runs = P.sample_runs(seed, opts['networks'], opts)
    return full, data, runs, P.plan_chunks(runs, opts['chunk_size'])


def _train_chunk(data: Dict[str, Any], runs: Dict[str, Tensor], ids: Tensor,
                 settings: Dict[str, Any]) -> Dict[str, Any]:
    """Trains the runs ``ids`` (one architecture) as one batch."""
    sizes, act = P.architecture_of(runs, int(ids[0]), settings, settings['num_features'], data['num_classes'])
    fit = train_networks(data['train_x'], data['train_y'], data['test_x'], data['test_y'], sizes, act,
                         seed=settings['seed'], run_ids=ids, batch_size=settings['batch_size'],
                         num_classes=data['num_classes'],
                         **{k: runs[k][ids] for k in ('lr', 'weight_decay', 'init_scale', 'label_noise',
                                                      'train_fraction', 'epochs')})
    part = dict(run_id=ids[fit.network], epoch=fit.epoch, weights=fit.weights, biases=fit.biases,
                **{k: getattr(fit, k) for k in _METRICS})
    _check_finite(part, runs)
    return part


def _check_finite(part: Dict[str, Any], runs: Dict[str, Tensor]) -> None:
    """Refuses a chunk in which a network diverged, naming the first such run
    and its hyperparameters; one whole-tensor test per tensor on success."""
    tensors = part['weights'] + part['biases'] + [part['train_loss'], part['test_loss']]
    if all(bool(torch.isfinite(t).all()) for t in tensors):
        return
    ok = torch.stack([torch.isfinite(t.reshape(t.shape[0], -1)).all(1) for t in tensors]).all(0)
    k = int((~ok).nonzero()[0])
    r = int(part['run_id'][k])
    hyper = ', '.join(f'{f}={runs[f][r].item():.4g}' for f in P.RUN_FIELDS)
    raise ValueError(f'run {r} of the zoo diverged at epoch {int(part["epoch"][k])} (non-finite weights or '
                     f'loss) with {hyper}; nothing was recorded for it. Narrow the lr or init_scale range')


def _train_chunks(out: str, data, runs, chunks: List[Tensor], mine: range, settings: Dict[str, Any],
                  progress: bool) -> List[Dict[str, Any]]:
    """Trains chunks ``mine`` in order; each finished one is saved to
    ``out/.partial/``, and one found there from these settings is loaded, not retrained."""
    from tqdm.auto import tqdm
    settings_json = json.dumps(settings, sort_keys=True)
    parts = []
    with tqdm(total=sum(chunks[c].numel() for c in mine), desc='training the zoo', unit='net',
              disable=not progress) as bar:
        for c in mine:
            path = chunk_path(out, c, c + 1)
            part = _load_chunk(path, settings_json, chunks[c])
            if part is None:
                part = _train_chunk(data, runs, chunks[c], settings)
                _save(path, dict(format=FORMAT, format_version=FORMAT_VERSION, kind='chunk',
                                 settings=settings_json, run_ids=chunks[c], part=part))
            parts.append(part)
            bar.update(chunks[c].numel())
    return parts


def _load_chunk(path: str, settings_json: str, ids: Tensor) -> Optional[Dict[str, Any]]:
    """The finished chunk at ``path``, or ``None`` when there is none or it
    is unreadable, corrupt or of other settings: it is only a cache."""
    if not os.path.exists(path):
        return None
    try:
        rec = _load(path, 'partial chunk', 'chunk')
    except ValueError:
        return None
    if rec.get('settings') != settings_json or not torch.equal(rec['run_ids'], ids):
        return None
    return rec['part']


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #

def _meta(data: Dict[str, Any], runs: Dict[str, Tensor]) -> Dict[str, Any]:
    """What the zoo file holds besides the networks (:data:`_META`)."""
    return {k: runs if k == 'runs' else data[k] for k in _META}


def _write_zoo(out: str, settings: Dict[str, Any], meta: Dict[str, Any], parts: List[Dict[str, Any]]) -> None:
    """Joins the chunks' checkpoints into ``zoo.pt``, then writes the manifest."""
    manifest_path = os.path.join(out, store.MANIFEST)
    if os.path.exists(manifest_path):    # the old manifest must not vouch for a half-replaced zoo
        os.unlink(manifest_path)
    # Chunks come architecture by architecture (plan_chunks), so consecutive
    # parts of one architecture stack into that architecture's tensors.
    archs: List[Dict[str, Any]] = []
    arch_of, position = [], []
    for part in parts:
        sizes = [part['weights'][0].shape[2]] + [w.shape[1] for w in part['weights']]
        act = settings['activations'][int(meta['runs']['activation'][int(part['run_id'][0])])]
        if not archs or archs[-1]['layer_sizes'] != sizes or archs[-1]['activation'] != act:
            archs.append(dict(layer_sizes=sizes, activation=act, parts=[]))
        a = archs[-1]
        start = sum(p['epoch'].numel() for p in a['parts'])
        a['parts'].append(part)
        arch_of.append(torch.full((part['epoch'].numel(),), len(archs) - 1, dtype=torch.long))
        position.append(start + torch.arange(part['epoch'].numel()))
    architectures = [dict(layer_sizes=a['layer_sizes'], activation=a['activation'],
                          weights=[torch.cat([p['weights'][l] for p in a['parts']]) for l in range(len(a['layer_sizes']) - 1)],
                          biases=[torch.cat([p['biases'][l] for p in a['parts']]) for l in range(len(a['layer_sizes']) - 1)])
                     for a in archs]
    cols = {k: torch.cat([p[k] for p in parts]) for k in ('run_id', 'epoch', *_METRICS)}
    cols['architecture'], cols['position'] = torch.cat(arch_of), torch.cat(position)
    # Rows sorted by (run, epoch): a run's checkpoints together, in time order.
    order = torch.sort(cols['run_id'] * (1 << 20) + cols['epoch'], stable=True).indices
    checkpoints = {k: v[order].contiguous() for k, v in cols.items()}
    path = os.path.join(out, ZOO_FILE)
    _save(path, dict(format=FORMAT, format_version=FORMAT_VERSION, kind='zoo',
                     settings=json.dumps(settings, sort_keys=True), activations=list(settings['activations']),
                     architectures=architectures, checkpoints=checkpoints, **meta))
    final = checkpoints['test_acc'][_final_rows(checkpoints, meta['runs'])]
    store.write_json(manifest_path, dict(
        format=FORMAT, format_version=FORMAT_VERSION, settings=settings,
        files={ZOO_FILE: dict(bytes=os.path.getsize(path), sha256=store.sha256(path))},
        networks=int(meta['runs']['run_id'].numel()), checkpoints=int(order.numel()),
        architectures=[dict(layer_sizes=a['layer_sizes'], activation=a['activation'],
                            checkpoints=int(a['weights'][0].shape[0])) for a in architectures],
        num_classes=int(meta['num_classes']),
        final_test_acc=dict(min=float(final.min()), median=float(final.median()), max=float(final.max()))))


def _final_rows(checkpoints: Dict[str, Tensor], runs: Dict[str, Tensor]) -> Tensor:
    """Rows of each run's last checkpoint (its epoch budget)."""
    return (checkpoints['epoch'] == runs['epochs'][checkpoints['run_id']]).nonzero().squeeze(1)


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #

def build_zoo(
    source: str = 'digits',
    out: Union[str, os.PathLike, None] = None,
    seed: int = 0,
    *,
    source_dir: Union[str, os.PathLike, None] = None,
    shard: Union[str, Tuple[int, int], None] = None,
    overwrite: bool = False,
    threads: Optional[int] = 1,
    progress: bool = True,
    **settings: Any,
) -> str:
    """Builds a zoo of trained MLP classifiers in ``out`` and returns ``out``
    (or, with ``shard``, the shard file's path).

    A complete zoo already in ``out`` with these settings is reused (no lock,
    so a read-only zoo serves); one with other settings raises ``ValueError``
    naming them, unless ``overwrite=True``. Read the result with
    :class:`nngraph.zoo.ZooGraphDataset` or :func:`read_zoo`.

    Args:
        source: ``'digits'`` or ``'fashion-mnist'`` (:mod:`nngraph.zoo.plan`).
        out: the zoo directory (default :func:`zoo_root`).
        seed: seeds the digits test split and every network (hyperparameters,
            initialisation, subset, label noise, minibatches).
        source_dir: the idx files' directory (``fashion-mnist``).
        shard: ``(i, n)`` or ``'i/n'``: train only the ``i``-th of ``n``
            slices of chunks into ``out/shards/shard-i-of-n.pt``; join the
            shards with :func:`merge_zoo_shards`.
        overwrite: rebuild from scratch, discarding a complete zoo or the
            finished chunks of an interrupted one.
        threads: CPU threads while training (restored afterwards; ``None``
            leaves torch's setting). Default 1, as the INR builder: small
            batched matmuls gain little from a second thread on shared cores;
            run shards in parallel processes instead.
        progress: a tqdm progress bar.
        **settings: override :func:`nngraph.zoo.plan.defaults_for`:
            ``networks``, ``depths``, ``widths``, ``activations``, ``epochs``
            (choices), ``lr``, ``weight_decay``, ``init_scale`` (log-uniform
            ranges), ``label_noise``, ``train_fraction`` (uniform ranges),
            ``batch_size``, ``chunk_size``, ``test_fraction`` (digits),
            ``train_images``, ``test_images``, ``pool`` (fashion-mnist).

    Raises:
        ValueError: an unknown source or setting, a setting out of range
            (named with its value), a bad shard spec, an incompatible zoo in
            ``out``, an unwritable ``out``, a network that diverged (named).
        LockHeldError: (a ``ValueError``) another build or merge holds ``out``.
    """
    settings, data, runs, chunks = _plan(source, seed, settings, source_dir)
    out = os.path.expanduser(os.fspath(out)) if out is not None else zoo_root(source)
    spans = [(c, c + 1) for c in range(len(chunks))]       # chunk c's file in .partial/

    if shard is not None:
        i, n = parse_shard(shard)
        mine = range(i * len(chunks) // n, (i + 1) * len(chunks) // n)
        name = f'shard-{i}-of-{n}'
        path = os.path.join(out, 'shards', f'{name}.pt')
        settings_json = json.dumps(settings, sort_keys=True)
        # Shards of one zoo run side by side: each locks its own file.
        with rewriting(out, os.path.join(out, 'shards'), f'.{name}.lock', f'shard {i}/{n} of {out!r}',
                       [spans[c] for c in mine], [path], overwrite, lambda: _shard_done(path, settings_json)) as todo:
            if not todo:
                return path
            with num_threads(threads):
                parts = _train_chunks(out, data, runs, chunks, mine, settings, progress)
            _save(path, dict(format=FORMAT, format_version=FORMAT_VERSION, kind='shard', shard=i, num_shards=n,
                             chunks=[mine.start, mine.stop], num_chunks=len(chunks), settings=settings_json,
                             parts=parts, **_meta(data, runs)))
        return path

    def reusable() -> bool:
        if overwrite or not os.path.exists(os.path.join(out, store.MANIFEST)):
            return False
        old = read_manifest(out)['settings']
        refuse_other_settings(out, 'a zoo', old, settings,
                              [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)])
        return True

    if reusable():
        return out
    targets = [os.path.join(out, f) for f in (ZOO_FILE, store.MANIFEST)]
    with rewriting(out, out, LOCK, f'the zoo directory {out!r}', spans, targets, overwrite, reusable) as todo:
        if todo:
            with num_threads(threads):
                parts = _train_chunks(out, data, runs, chunks, range(len(chunks)), settings, progress)
            _write_zoo(out, settings, _meta(data, runs), parts)
    return out


def _shard_done(path: str, settings_json: str) -> bool:
    """Whether ``path`` holds this shard, intact and of these settings."""
    if not os.path.exists(path):
        return False
    try:
        return _load(path, 'shard file', 'shard').get('settings') == settings_json
    except ValueError:
        return False


def merge_zoo_shards(out: Union[str, os.PathLike]) -> str:
    """Joins ``out/shards/shard-*-of-n.pt`` into ``zoo.pt`` and the manifest,
    identical to a one-shot build of the same settings. Every shard is
    verified (checksum, settings, chunk range) before anything is written.

    Raises:
        ValueError: no shard files, shards of different builds or counts, a
            missing, corrupt or partial shard (each named).
        LockHeldError: another build or merge holds ``out``.
    """
    out = os.path.expanduser(os.fspath(out))
    folder = os.path.join(out, 'shards')
    paths = sorted(p for p in glob.glob(os.path.join(folder, 'shard-*-of-*.pt')) if _SHARD_RE.search(p))
    if not paths:
        raise ValueError(f'no shard files in {folder!r}')
    with writer(out, LOCK, f'the zoo directory {out!r}'):
        shards: Dict[int, Tuple[str, Dict[str, Any]]] = {}
        counts = set()
        for p in paths:
            m = _SHARD_RE.search(p)
            rec = _load(p, 'shard file', 'shard')
            if (rec['shard'], rec['num_shards']) != (int(m.group(1)), int(m.group(2))):
                raise ValueError(f'shard file {p!r} does not hold shard {m.group(1)}/{m.group(2)}')
            counts.add(rec['num_shards'])
            shards[rec['shard']] = (p, rec)
        if len(counts) != 1:
            raise ValueError(f'shard files in {folder!r} come from builds split {sorted(counts)} ways; '
                             f'remove the stale ones')
        n = counts.pop()
        missing = [f'shard-{i}-of-{n}.pt' for i in range(n) if i not in shards]
        if missing:
            raise ValueError(f'cannot merge: {", ".join(missing)} missing in {folder!r}')
        p0, first = shards[0]
        parts = []
        for i in range(n):
            p, rec = shards[i]
            if rec['settings'] != first['settings']:
                raise ValueError(f'shard file {p!r} was built with other settings than {p0!r}')
            lo, hi = i * first['num_chunks'] // n, (i + 1) * first['num_chunks'] // n
            if rec['chunks'] != [lo, hi] or len(rec['parts']) != hi - lo:
                raise ValueError(f'shard file {p!r} is partial: it holds {len(rec["parts"])} chunks for '
                                 f'range {rec["chunks"]}, expected [{lo}, {hi})')
            parts += rec['parts']
        remove_stale_temp_files(os.path.join(out, ZOO_FILE))
        remove_stale_temp_files(os.path.join(out, store.MANIFEST))
        _write_zoo(out, json.loads(first['settings']), {k: first[k] for k in _META}, parts)
    return out
