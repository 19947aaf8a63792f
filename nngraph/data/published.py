"""Loaders for the INR datasets published with DWSNets, neural-graphs and NFN.

Each reads a directory of per-INR checkpoints with
:func:`nngraph.from_checkpoint`, applying that dataset's SIREN conventions
(``w0``, output offset), and stacks the weights into the record that
:class:`~nngraph.data.INRGraphDataset` serves. The layouts below were read
from the public code of each project (files named); the data itself lives on
file hosts and was not available, so the tests fabricate small datasets in
exactly these layouts.

``'dwsnets'`` (AvivNavon/DWSNets: ``nn/inr.py``, ``experiments/data.py``,
``experiments/mnist/generate_data_splits.py``)
    A splits JSON ``{"train": {"path": [...], "label": [...]}, "val": ...,
    "test": ...}`` (labels may be strings such as ``"3"``); each path is a
    ``.pth`` state dict ``seq.0.weight, seq.0.bias, ..., seq.2.weight,
    seq.2.bias`` of ``INR(in_dim=2, n_layers=3, up_scale=16)``: 2-32-32-1,
    ``sin(30 z)`` in every hidden layer (first included), zero-bias init,
    and ``forward(x) = seq(x) + 0.5``. DWSNets writes absolute paths
    (``os.getcwd() / p``) under ``mnist-inrs/mnist_png_{training,testing}_{label}_{id}/``.

``'neural-graphs'`` (mkofinas/neural-graphs: ``nn/inr.py``,
``experiments/data.py``, ``experiments/inr_classification/dataset/``)
    The same INR and JSON schema, with paths relative to the dataset
    directory (``fmnist_inrs/train/model_{id}.pth``); its FashionMNIST
    checkpoints also carry an integer ``"label"`` entry, which is ignored.

``'nfn'`` (AllanYangZhou/nfn: ``experiments/siren_utils.py``,
``experiments/classify_siren_configs/dset/mnist.yaml``; the reader in
neural-graphs ``experiments/data_nfn.py``)
    Folders ``{prefix}_{label}s/net{idx}.pth`` (``prefix`` is
    ``randinit_smaller``; ``idx`` runs over 0..N-1 across all folders) with
    state dicts ``net.0.linear.weight, net.0.linear.bias, net.1.linear.*,
    net.2.weight, net.2.bias`` of ``Siren(2, 32, hidden_layers=1, 1,
    outermost_linear=True, first_omega_0=30, hidden_omega_0=30)``: no output
    offset (the images were normalised to ``[-1, 1]``). Splits by index at
    ``split_points=(45000, 50000)``: train below the first, val below the
    second, test above. NFT's extra views of the same images live in
    ``{prefix}_aug{k}_{label}s/net{idx}.pth`` and become views ``k + 1``.

For DWSNets/neural-graphs the ``object_id`` is the item's position in its
split list (one INR per image); for NFN it is ``idx``.

Reading tens of thousands of checkpoints takes minutes;
:func:`convert_published` (``python -m nngraph.data convert``) does it once and
writes the nngraph format, which then loads in a second.
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from nngraph.checkpoints import from_checkpoint
from nngraph.data import store
from nngraph.graph import to_weights
from nngraph.inr import SirenConfig

__all__ = ['detect_format', 'load_published', 'convert_published', 'CONVENTIONS']

# SIREN conventions of each published dataset (see the module docstring).
CONVENTIONS: Dict[str, SirenConfig] = {
    'dwsnets': SirenConfig.preset('dwsnets', (2, 32, 32, 1)),
    'neural-graphs': SirenConfig.preset('neural-graphs', (2, 32, 32, 1)),
    'nfn': SirenConfig.preset('nfn', (2, 32, 32, 1)),
}


def detect_format(root: str) -> str:
    """Guesses the layout of ``root``: ``'nngraph'`` (``manifest.json``),
    ``'dwsnets'`` (a splits JSON) or ``'nfn'`` (``*_{label}s/net*.pth``).

    Raises:
        FileNotFoundError: ``root`` missing, or none of the layouts found
            (for an unfinished nngraph build, the missing manifest is named).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f'no dataset directory {root!r}')
    if os.path.exists(os.path.join(root, store.MANIFEST)):
        return 'nngraph'
    if _find_splits_json(root, None, quiet=True) is not None:
        return 'dwsnets'
    if glob.glob(os.path.join(root, '*_*s', 'net*.pth')):
        return 'nfn'
    raise FileNotFoundError(f'{root!r} holds no complete INR dataset: {store.MANIFEST} is missing '
                            f'(an nngraph build that was interrupted or never ran; build it with '
                            f'nngraph.data.build_inr_dataset), and there is no splits JSON '
                            f'(DWSNets / neural-graphs) nor <prefix>_<label>s/net<idx>.pth '
                            f'folders (NFN)')


def load_published(root: str, format: str, split: str, **options: Any) -> Dict[str, Any]:
    """Reads one split of a published INR dataset into a stacked record.

    Args:
        root: the dataset directory.
        format: ``'dwsnets'``, ``'neural-graphs'`` or ``'nfn'``.
        split: ``'train'``, ``'val'`` or ``'test'``.
        **options: ``splits_file`` (DWSNets / neural-graphs: the JSON, found
            automatically when ``root`` holds exactly one), ``prefix`` and
            ``split_points`` (NFN), ``w0`` and ``output_offset`` to override
            the published conventions.

    Raises:
        FileNotFoundError: a checkpoint named in the split file is missing.
        ValueError: checkpoints of different architectures, unreadable
            checkpoints (named), an empty split.
    """
    if format in ('dwsnets', 'neural-graphs'):
        paths, labels, objects, views = _dwsnets_items(root, split, options.pop('splits_file', None))
    elif format == 'nfn':
        paths, labels, objects, views = _nfn_items(root, split, options.pop('prefix', 'randinit_smaller'),
                                                   options.pop('split_points', (45000, 50000)))
    else:
        raise ValueError(f'unknown published format {format!r}; choose dwsnets, neural-graphs or nfn')
    base = CONVENTIONS[format]
    w0 = float(options.pop('w0', base.w0))
    offset = float(options.pop('output_offset', base.output_offset))
    if options:
        raise TypeError(f'unknown options for format {format!r}: {sorted(options)}')
    if not paths:
        raise ValueError(f'split {split!r} of the {format} dataset in {root!r} is empty')

    weights: List[List[torch.Tensor]] = []
    biases: List[List[torch.Tensor]] = []
    sizes = None
    for p in paths:   # one checkpoint file per INR: reading them is the work
        g = from_checkpoint(p, w0=w0, output_offset=offset)
        if sizes is None:
            sizes = g.layer_sizes
        elif g.layer_sizes != sizes:
            raise ValueError(f'checkpoint {p!r} has layers {g.layer_sizes}, but {paths[0]!r} has '
                             f'{sizes}; one dataset must hold one architecture')
        w, b = to_weights(g)
        weights.append(w)
        biases.append(b)
    L = len(sizes) - 1
    config = SirenConfig(layer_sizes=sizes, w0=w0, init=base.init, output_offset=offset)
    labels_t = torch.tensor(labels, dtype=torch.long)
    return dict(
        weights=[torch.stack([w[l] for w in weights]) for l in range(L)],
        biases=[torch.stack([b[l] for b in biases]) for l in range(L)],
        y=labels_t, object_id=torch.tensor(objects, dtype=torch.long),
        view_id=torch.tensor(views, dtype=torch.long), psnr=None, images=None, image_object_id=None,
        activation=config.activation, convention=config.convention, layer_sizes=list(sizes),
        num_classes=None, paths=list(paths))


# --------------------------------------------------------------------------- #
# DWSNets / neural-graphs: a splits JSON
# --------------------------------------------------------------------------- #

def _is_splits(obj: Any) -> bool:
    return (isinstance(obj, dict) and 'train' in obj and isinstance(obj['train'], dict)
            and 'path' in obj['train'] and 'label' in obj['train'])


def _find_splits_json(root: str, splits_file: Optional[str], quiet: bool = False) -> Optional[str]:
    if splits_file is not None:
        path = splits_file if os.path.isabs(splits_file) else os.path.join(root, splits_file)
        if not os.path.exists(path):
            raise FileNotFoundError(f'splits file {path!r} is missing')
        return path
    found = []
    for p in sorted(glob.glob(os.path.join(root, '*.json'))):
        if os.path.basename(p) == store.MANIFEST:
            continue
        try:
            with open(p) as f:
                if _is_splits(json.load(f)):
                    found.append(p)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
    if len(found) == 1:
        return found[0]
    if quiet:
        return None
    if not found:
        raise FileNotFoundError(f'no splits JSON ({{"train": {{"path": [...], "label": [...]}}, ...}}) in {root!r}')
    raise ValueError(f'several splits files in {root!r} ({[os.path.basename(p) for p in found]}); '
                     f'pass splits_file=')


def _resolve(p: str, root: str, json_dir: str) -> str:
    # DWSNets stores absolute paths, neural-graphs paths relative to the
    # dataset directory; also accept paths relative to the JSON or the cwd.
    for cand in (p, os.path.join(root, p), os.path.join(json_dir, p)):
        if os.path.exists(cand):
            return cand
    # The published absolute paths point into the authors' machines: keep
    # the tail after the dataset folder name if it exists under root.
    parts = p.replace('\\', '/').split('/')
    for k in range(1, len(parts)):
        cand = os.path.join(root, *parts[k:])
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError(f'checkpoint {p!r} named in the splits file is missing '
                            f'(looked under {root!r})')


def _dwsnets_items(root: str, split: str, splits_file: Optional[str]):
    path = _find_splits_json(root, splits_file)
    with open(path) as f:
        data = json.load(f)
    if not _is_splits(data):
        raise ValueError(f'{path!r} is not a splits file: expected {{"train": {{"path": [...], '
                         f'"label": [...]}}, ...}}')
    if split not in data:
        raise ValueError(f'splits file {path!r} has no {split!r} split (it has {sorted(data)})')
    entry = data[split]
    paths, labels = list(entry['path']), list(entry['label'])
    if len(paths) != len(labels):
        raise ValueError(f'splits file {path!r}: split {split!r} has {len(paths)} paths but '
                         f'{len(labels)} labels')
    try:
        labels = [int(l) for l in labels]
    except (TypeError, ValueError):
        raise ValueError(f'splits file {path!r}: labels must be integers (or integer strings)') from None
    json_dir = os.path.dirname(path)
    resolved = [_resolve(p, root, json_dir) for p in paths]
    return resolved, labels, list(range(len(paths))), [0] * len(paths)


# --------------------------------------------------------------------------- #
# NFN: {prefix}_{label}s/net{idx}.pth
# --------------------------------------------------------------------------- #

def _nfn_items(root: str, split: str, prefix: str, split_points: Sequence[int]):
    a, b = (int(v) for v in split_points)
    base_re = re.compile(re.escape(prefix) + r'_(\d+)s$')
    aug_re = re.compile(re.escape(prefix) + r'_aug(\d+)_(\d+)s$')
    idx_re = re.compile(r'net(\d+)\.pth$')
    items: Dict[Tuple[int, int], Tuple[str, int]] = {}
    for folder in sorted(os.listdir(root)):
        m, view = base_re.fullmatch(folder), 0
        if m is None:
            m = aug_re.fullmatch(folder)
            if m is None:
                continue
            view = int(m.group(1)) + 1
        label = int(m.groups()[-1])
        for p in glob.glob(os.path.join(root, folder, 'net*.pth')):
            mi = idx_re.search(os.path.basename(p))
            if mi is None:
                continue
            key = (int(mi.group(1)), view)
            if key in items:
                raise ValueError(f'two checkpoints for net{key[0]} (view {view}): {items[key][0]!r} '
                                 f'and {p!r}')
            items[key] = (p, label)
    if not items:
        raise FileNotFoundError(f'no {prefix}_<label>s/net<idx>.pth checkpoints in {root!r}')
    base_idx = sorted(i for i, v in items if v == 0)
    if base_idx != list(range(len(base_idx))):
        raise ValueError(f'NFN checkpoints net<idx>.pth in {root!r} must be numbered 0..N-1 '
                         f'without gaps (found {len(base_idx)} files, largest idx {base_idx[-1]})')
    lo, hi = {'train': (0, a), 'val': (a, b), 'test': (b, 1 << 62)}[split]
    keys = sorted((k for k in items if lo <= k[0] < hi), key=lambda k: (k[1], k[0]))
    paths = [items[k][0] for k in keys]
    labels = [items[k][1] for k in keys]
    return paths, labels, [k[0] for k in keys], [k[1] for k in keys]


# --------------------------------------------------------------------------- #
# Conversion into the nngraph format
# --------------------------------------------------------------------------- #

def convert_published(root: str, format: str, out: str, **options: Any) -> str:
    """Reads every split of a published dataset once and writes it in the
    nngraph format (one stacked file per split plus ``manifest.json``,
    atomically, manifest last), so later loads skip the per-checkpoint reads.

    Splits the source does not have (or that are empty) are written empty.
    The result has no fitted images or PSNRs (``psnr`` is NaN, ``images``
    empty), so :func:`nngraph.data.show.show` does not apply to it.

    Args:
        root: the published dataset directory.
        format: ``'dwsnets'``, ``'neural-graphs'`` or ``'nfn'``.
        out: the directory to write.
        **options: as for :func:`load_published`.

    Returns:
        ``out``.
    """
    out = os.fspath(out)
    records = {}
    for s in store.SPLITS:
        try:
            records[s] = load_published(os.fspath(root), format, s, **dict(options))
        except ValueError as err:
            if 'is empty' not in str(err) and 'has no' not in str(err):
                raise
            records[s] = None
    filled = [r for r in records.values() if r is not None]
    if not filled:
        raise ValueError(f'the {format} dataset in {root!r} has no INRs in any split')
    ref = filled[0]
    num_classes = max(int(r['y'].max()) for r in filled) + 1
    manifest_path = os.path.join(out, store.MANIFEST)
    os.makedirs(out, exist_ok=True)
    if os.path.exists(manifest_path):
        os.unlink(manifest_path)
    entries = {}
    for s, rec in records.items():
        if rec is None:    # an empty split of the same architecture
            rec = dict(ref, weights=[w[:0] for w in ref['weights']], biases=[b[:0] for b in ref['biases']],
                       y=ref['y'][:0], object_id=ref['object_id'][:0], view_id=ref['view_id'][:0])
        n = int(rec['y'].numel())
        record = dict(format=store.FORMAT, format_version=store.FORMAT_VERSION, split=s,
                      weights=rec['weights'], biases=rec['biases'], y=rec['y'],
                      object_id=rec['object_id'], view_id=rec['view_id'],
                      psnr=torch.full((n,), float('nan')), steps=torch.zeros(n, dtype=torch.long),
                      seeds=torch.zeros(n, dtype=torch.long),
                      images=torch.zeros(0), image_object_id=torch.zeros(0, dtype=torch.long),
                      activation=rec['activation'] if isinstance(rec['activation'], str)
                      else list(rec['activation']),
                      convention=rec['convention'], layer_sizes=list(rec['layer_sizes']),
                      num_classes=num_classes)
        path = os.path.join(out, f'{s}.pt')
        store.save_torch(path, record)
        views = int(rec['view_id'].max()) + 1 if n else 0
        entries[s] = dict(file=f'{s}.pt', bytes=os.path.getsize(path), sha256=store.sha256(path),
                          num_inrs=n, num_objects=int(rec['object_id'].unique().numel()), views=views,
                          psnr_mean=None, psnr_min=None)
    settings = dict(source=f'{format}:{os.path.abspath(os.fspath(root))}',
                    options={k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()})
    store.write_json(manifest_path, dict(
        format=store.FORMAT, format_version=store.FORMAT_VERSION, settings=settings, splits=entries,
        layer_sizes=list(ref['layer_sizes']), activation=record['activation'],
        convention=ref['convention'], num_classes=num_classes))
    return out
