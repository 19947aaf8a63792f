"""On-disk format of a built INR dataset, written atomically and checked on read.

A dataset directory holds one file per split plus a manifest written last::

    DIR/train.pt  DIR/val.pt  DIR/test.pt   one dict of stacked tensors each
    DIR/manifest.json                       settings, and per split: file name,
                                            byte size, sha256, counts

A split file (``torch.save``, read with ``weights_only=True``) holds
``weights`` (list of ``[n, d_{l+1}, d_l]``), ``biases`` (list of
``[n, d_{l+1}]``, output offset folded in), ``y``, ``object_id``,
``view_id``, ``steps``, ``seeds`` (long ``[n]``), ``psnr`` (``[n]``),
``images`` (``[n_objects, H, W, C]``, the fitted signals) with
``image_object_id``, and the conventions (``activation``, ``convention``,
``layer_sizes``), ``format`` and ``format_version``.

Every file goes through :func:`nngraph._atomic.atomic_path` (temp file, then
rename), and the manifest is written only after all split files: a directory
without a manifest is an unfinished build, and a split file whose size or
hash differs from the manifest is refused by name.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from nngraph._atomic import atomic_path

FORMAT = 'nngraph-inr'
FORMAT_VERSION = 1
SPLITS = ('train', 'val', 'test')
MANIFEST = 'manifest.json'

SPLIT_KEYS = ('weights', 'biases', 'y', 'object_id', 'view_id', 'psnr', 'steps', 'seeds',
              'images', 'image_object_id', 'activation', 'convention', 'layer_sizes')


def sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _digest(h: 'hashlib._Hash', value: Any) -> None:
    # Type tags and lengths keep different structures from hashing alike.
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f'T{t.dtype}{tuple(t.shape)}'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    elif isinstance(value, dict):
        h.update(f'D{len(value)}'.encode())
        for k in sorted(value):
            h.update(f'K{len(str(k))}:{k}'.encode())
            _digest(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f'L{len(value)}'.encode())
        for v in value:
            _digest(h, v)
    else:
        text = repr(value)                  # str, int, float, bool, None
        h.update(f'{type(value).__name__}{len(text)}:{text}'.encode())


def content_sha256(record: Dict[str, Any]) -> str:
    """SHA-256 of a record's contents, every key but ``'sha256'``: each
    tensor's dtype, shape and raw bytes, the other values by ``repr``. A pure
    function of the bytes (no float arithmetic), so a flipped bit anywhere in
    a tensor changes it, on every machine alike."""
    h = hashlib.sha256()
    _digest(h, {k: v for k, v in record.items() if k != 'sha256'})
    return h.hexdigest()


def seal(record: Dict[str, Any]) -> Dict[str, Any]:
    """``record`` with its :func:`content_sha256` stored under ``'sha256'``."""
    return {**record, 'sha256': content_sha256(record)}


def check_seal(record: Dict[str, Any], path: str, what: str) -> None:
    """Refuses a record whose contents differ from the checksum it was
    written with (a flipped bit, an edited tensor), naming the file.

    Raises:
        ValueError: no checksum, or a checksum that does not match.
    """
    if 'sha256' not in record:
        raise ValueError(f'{what} {path!r} has no checksum (written by an older nngraph, or '
                         f'edited); rebuild it')
    if content_sha256(record) != record['sha256']:
        raise ValueError(f'{what} {path!r} is corrupt: its contents do not match the checksum it '
                         f'was written with; rebuild it')


def load_sealed(path: str, what: str) -> Dict[str, Any]:
    """:func:`load_torch` then :func:`check_seal`: a sealed file's record,
    every failure a ``ValueError`` naming the file."""
    rec = load_torch(path, what)
    check_seal(rec, path, what)
    return rec


def cached_sealed(path: str, what: str) -> Optional[Dict[str, Any]]:
    """The record of a sealed file that only caches work (a finished chunk, a
    finished shard), or ``None`` when it is absent, unreadable or corrupt:
    redoing the work is always right."""
    if not os.path.exists(path):
        return None
    try:
        return load_sealed(path, what)
    except ValueError:
        return None


def save_torch(path: str, obj: Any) -> None:
    """``torch.save`` through a temp file renamed onto ``path``. Saved through
    a file object: given a path, ``torch.save`` names the archive inside the
    file after it (here the random temp name), so two saves of one object
    would differ in their bytes and their sha256."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        torch.save(obj, f)


def load_torch(path: str, what: str) -> Dict[str, Any]:
    """Loads a file this package wrote, turning every failure into a
    ``ValueError`` that names the file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} {path!r} is missing')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:   # truncated zip, bad pickle, ...: all mean "not a complete file"
        raise ValueError(f'{what} {path!r} is truncated or corrupt and cannot be read '
                         f'({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""})') from None
    if not isinstance(obj, dict) or obj.get('format') != FORMAT:
        raise ValueError(f'{what} {path!r} is not an nngraph INR file')
    if obj.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{what} {path!r} has format version {obj.get("format_version")}, '
                         f'this nngraph reads version {FORMAT_VERSION}')
    return obj


def write_json(path: str, obj: Dict[str, Any]) -> None:
    """Writes ``obj`` as JSON through a temp file renamed onto ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1, sort_keys=True)


def read_manifest(root: str, *, what: str = 'INR dataset', fmt: str = FORMAT, version: int = FORMAT_VERSION,
                  how: str = 'the build was interrupted or never ran; build it with '
                             'nngraph.data.build_inr_dataset or python -m nngraph.data build') -> Dict[str, Any]:
    """The manifest of a complete build in ``root``: of an INR dataset by
    default; the model zoo passes its own ``what``, ``fmt``, ``version`` and
    ``how`` (the command that builds one).

    Raises:
        FileNotFoundError: ``root`` does not exist, or has no manifest (an
            unfinished or interrupted build).
        ValueError: an unreadable manifest, or one of another format.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f'no {what} directory {root!r}')
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f'{root!r} holds no complete {what}: {MANIFEST} is missing ({how})')
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f'manifest {path!r} cannot be read: {err}') from None
    if not isinstance(manifest, dict) or manifest.get('format') != fmt or manifest.get('format_version') != version:
        raise ValueError(f'{path!r} is not a version-{version} {fmt} manifest')
    return manifest


def read_split(root: str, split: str, manifest: Dict[str, Any] | None = None) -> Dict[str, Any]:
    """Loads and checks one split file of a complete build.

    Raises:
        ValueError: an unknown split, a split file that is missing, truncated
            (size differs from the manifest) or corrupt (hash differs), each
            naming the file.
    """
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; choose one of {SPLITS}')
    manifest = read_manifest(root) if manifest is None else manifest
    entry = manifest['splits'].get(split)
    if entry is None:
        raise ValueError(f'the dataset in {root!r} has no {split!r} split')
    path = os.path.join(root, entry['file'])
    if not os.path.exists(path):
        raise FileNotFoundError(f'split file {path!r} is missing from the dataset in {root!r}')
    size = os.path.getsize(path)
    if size != entry['bytes']:
        raise ValueError(f'split file {path!r} is truncated or was replaced: {size} bytes, '
                         f'the manifest says {entry["bytes"]}')
    if sha256(path) != entry['sha256']:
        raise ValueError(f'split file {path!r} is corrupt: its sha256 differs from the manifest')
    record = load_torch(path, 'split file')
    missing = [k for k in SPLIT_KEYS if k not in record]
    if missing:
        raise ValueError(f'split file {path!r} lacks {missing}')
    return record


def first_objects(object_id: Tensor, y: Tensor, k: int) -> Tensor:
    """Indices of the items whose object is among the ``k`` lowest object ids
    of its class (the builder's and the reader's ``objects_per_class``)."""
    if k < 1:
        raise ValueError(f'objects_per_class must be at least 1, got {k}')
    objects, inverse = torch.unique(object_id, return_inverse=True)      # sorted object ids
    label = torch.zeros_like(objects).scatter_(0, inverse, y)
    # Rank of each object within its class, in object-id order (stable sort by label).
    order = torch.sort(label, stable=True).indices
    first = torch.searchsorted(label[order], label[order], right=False)
    rank = torch.empty_like(objects)
    rank[order] = torch.arange(objects.numel()) - first
    return (rank[inverse] < k).nonzero().squeeze(1)
