"""Image sources for INR datasets: ``digits``, ``fashion-mnist``, ``mnist`` and user arrays.

A source is a float tensor of images ``[N, H, W, C]`` with values in
``[0, 1]`` and long labels ``[N]``. Nothing is downloaded:

* ``digits`` is scikit-learn's copy of the UCI handwritten digits (1,797
  images of 8x8 pixels, 16 grey levels), which ships inside scikit-learn.
* ``fashion-mnist`` and ``mnist`` are read from the four standard idx files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
  ``.gz``) in a directory: ``source_dir=``, else the environment variable
  ``NNGRAPH_FASHION_MNIST_DIR`` / ``NNGRAPH_MNIST_DIR``, else the Debian path
  (``apt-get install -y dataset-fashion-mnist`` puts Fashion-MNIST in
  ``/usr/share/datasets/fashion-mnist``). Image ``i`` of the source is
  training image ``i`` for ``i < 60000`` and test image ``i - 60000`` after,
  so object ids are idx positions, as in the published INR datasets
  (DWSNets' ``model_<i>.pth`` is Fashion-MNIST image ``i``).

Fashion-MNIST's published INR split ships with nngraph
(:func:`published_val`: the 5,000 training images that FMNIST-INR holds out
for validation, ``nngraph/data/splits/fashion-mnist.json``); the builder
uses it with the official test images (:func:`nngraph.data.build.fixed_splits`).
"""
from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SOURCES = ('digits', 'fashion-mnist', 'mnist')

Source = Union[str, Tuple[Any, Any]]

# Where each idx source is looked for, and how a user gets it.
IDX_SOURCES: Dict[str, Dict[str, str]] = {
    'fashion-mnist': dict(env='NNGRAPH_FASHION_MNIST_DIR', default='/usr/share/datasets/fashion-mnist',
                          hint='apt-get install -y dataset-fashion-mnist', num_classes=10),
    'mnist': dict(env='NNGRAPH_MNIST_DIR', default='/usr/share/datasets/mnist',
                  hint='put the four MNIST idx files there, or set NNGRAPH_MNIST_DIR', num_classes=10),
}
IDX_FILES = (('train', 'train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
             ('test', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'))
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype('>i2'), 0x0C: np.dtype('>i4'),
               0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}
_SPLITS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'splits')


# --------------------------------------------------------------------------- #
# idx files
# --------------------------------------------------------------------------- #

def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Reads one idx file (LeCun's MNIST format, optionally gzipped) as an array.

    The header is two zero bytes, a type byte (``0x08`` for unsigned bytes),
    the number of dimensions and one big-endian 32-bit size per dimension;
    the data follow in row-major order.

    Raises:
        ValueError: a bad magic number, an unknown type, or a file whose size
            does not match its header (truncated or padded); the file is named.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        # A truncated gzip stream raises EOFError, a corrupt one zlib.error.
        raise ValueError(f'idx file {path!r} cannot be read: {type(err).__name__}: {err}') from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        magic = raw[:4].hex() if raw else 'empty file'
        raise ValueError(f'idx file {path!r} has a bad magic number ({magic}); '
                         f'expected 0000 0x08 <ndim> (unsigned bytes)')
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f'idx file {path!r} is truncated inside its header')
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], 'big') for k in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    # Python integers: a product of four 32-bit sizes can wrap around in int64
    # and match the file's length by accident.
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f'idx file {path!r} holds {len(raw)} bytes but its header {shape} '
                         f'implies {expected}: the file is truncated or corrupt')
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def source_dir(name: str, directory: Optional[Union[str, os.PathLike]] = None) -> str:
    """The directory the idx source ``name`` is read from: ``directory``, else
    the source's environment variable, else its Debian path."""
    spec = IDX_SOURCES[name]
    if directory is not None:
        return os.fspath(directory)
    return os.environ.get(spec['env']) or spec['default']


def _idx_file(directory: str, stem: str, name: str) -> str:
    for candidate in (stem, stem + '.gz'):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    spec = IDX_SOURCES[name]
    raise FileNotFoundError(
        f'{name}: {stem}[.gz] not found in {directory!r}. Install the data with '
        f'`{spec["hint"]}`, or point --source-dir / {spec["env"]} at the directory '
        f'that holds the four idx files')


def load_idx_source(name: str, directory: Optional[Union[str, os.PathLike]] = None) -> Tuple[Tensor, Tensor, int]:
    """Reads an MNIST-format source: ``(images [N, H, W, 1] float32 in [0, 1],
    labels [N] long, num_train)``, the training images first, then the test
    images.

    Raises:
        FileNotFoundError: a missing file, naming the directory and how to get it.
        ValueError: a bad idx file, an empty one, a label outside
            ``[0, num_classes)`` (file, value and position named), or images
            and labels whose counts differ (both files named).
    """
    if name not in IDX_SOURCES:
        raise ValueError(f'unknown idx source {name!r}; choose one of {sorted(IDX_SOURCES)}')
    directory = source_dir(name, directory)
    parts, labels, counts = [], [], []
    first_path = None
    for _, image_stem, label_stem in IDX_FILES:
        image_path = _idx_file(directory, image_stem, name)
        label_path = _idx_file(directory, label_stem, name)
        im, lab = read_idx(image_path), read_idx(label_path)
        if im.ndim != 3 or im.dtype != np.uint8:
            raise ValueError(f'{image_path!r} must hold uint8 images [N, H, W], got {im.dtype} '
                             f'of shape {im.shape}')
        if 0 in im.shape:
            raise ValueError(f'{image_path!r} holds no images (shape {im.shape}); expected at least '
                             f'one image of at least one pixel')
        if lab.ndim != 1 or lab.dtype.kind not in 'iu':
            raise ValueError(f'{label_path!r} must hold integer labels [N], got {lab.dtype} of '
                             f'shape {lab.shape}')
        _check_labels(lab, label_path, name)
        if im.shape[0] != lab.shape[0]:
            raise ValueError(f'{image_path!r} holds {im.shape[0]} images but {label_path!r} holds '
                             f'{lab.shape[0]} labels')
        if parts and im.shape[1:] != parts[0].shape[1:]:
            raise ValueError(f'{image_path!r} holds {im.shape[1:]} images but the training '
                             f'images of {first_path!r} are {parts[0].shape[1:]}')
        first_path = first_path or image_path
        parts.append(im)
        labels.append(lab)
        counts.append(im.shape[0])
    images = torch.from_numpy(np.concatenate(parts)).to(torch.float32).div_(255.0).unsqueeze(-1)
    return images, torch.from_numpy(np.concatenate(labels).astype(np.int64)), counts[0]


def _check_labels(labels: np.ndarray, path: str, name: str) -> None:
    """Refuses a label outside ``[0, num_classes)`` of source ``name``,
    naming the file, the value and its position: one stray label would
    otherwise become a class of its own (``num_classes`` is counted from the
    labels)."""
    k = IDX_SOURCES[name]['num_classes']
    bad = (labels < 0) | (labels >= k)       # one whole-array test; details only on failure
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f'{path!r} holds label {int(labels[i])} at position {i}; {name} has {k} '
                         f'classes, labels must lie in [0, {k})')


def published_val(name: str) -> Optional[Tensor]:
    """The validation images of ``name``'s published INR split, where one
    ships with nngraph (``splits/<name>.json``: Fashion-MNIST, the FMNIST-INR
    split of DWSNets and neural-graphs), as sorted training-image indices;
    ``None`` for sources without one."""
    path = os.path.join(_SPLITS_DIR, f'{name}.json')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return torch.tensor(sorted(json.load(f)['val']), dtype=torch.long)


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #

def load_source(source: Source, grid: int | None = None, *,
                source_dir: Optional[Union[str, os.PathLike]] = None) -> Tuple[Tensor, Tensor, str]:
    """Loads ``source`` as ``(images [N, H, W, C] float32 in [0, 1], labels [N] long, name)``.

    Args:
        source: ``'digits'``, or a pair ``(images, labels)`` where ``images``
            is an array ``[N, H, W]`` / ``[N, H, W, C]`` or a sequence of
            equally-sized ``[H, W]`` / ``[H, W, C]`` arrays with values in
            ``[0, 1]``, and ``labels`` are ``N`` integers.
        grid: if given, images are resized (bilinear, corners aligned) to
            ``grid x grid`` pixels.
        source_dir: where an idx source's files are (see :func:`source_dir`).

    Raises:
        FileNotFoundError: an idx source whose files are missing (the
            directory and the install command named).
        ValueError: an unknown source name, a bad idx file, no images, images of mixed sizes
            (the first two differing shapes named), values outside
            ``[0, 1]`` or not finite, labels that do not match.
    """
    if isinstance(source, str) and source in IDX_SOURCES:
        images, labels, _ = load_idx_source(source, source_dir)
        name = source
    elif isinstance(source, str):
        if source != 'digits':
            raise ValueError(f'unknown source {source!r}; built-in sources: {", ".join(SOURCES)} '
                             f'(or pass (images, labels))')
        from sklearn.datasets import load_digits
        d = load_digits()
        images = torch.tensor(d.images, dtype=torch.float32).unsqueeze(-1) / 16.0
        labels = torch.tensor(d.target, dtype=torch.long)
        name = 'digits'
    elif isinstance(source, (tuple, list)) and len(source) == 2:
        images, labels = _custom(*source)
        name = 'custom'
    else:
        raise ValueError(f'source must be a name ({", ".join(SOURCES)}) or an (images, labels) '
                         f'pair, got {type(source).__name__}')
    return resize(images, grid), labels, name


def resize(images: Tensor, grid: Optional[int]) -> Tensor:
    """``images [N, H, W, C]`` resized (bilinear, corners aligned) to
    ``grid x grid`` pixels; unchanged when ``grid`` is ``None`` or already the size."""
    if grid is None:
        return images
    if int(grid) < 1:
        raise ValueError(f'grid must be a positive number of pixels, got {grid}')
    if tuple(images.shape[1:3]) == (grid, grid):
        return images
    out = F.interpolate(images.permute(0, 3, 1, 2), size=(int(grid), int(grid)),
                        mode='bilinear', align_corners=True).permute(0, 2, 3, 1)
    return out.clamp(0.0, 1.0).contiguous()


def _custom(images: Any, labels: Any) -> Tuple[Tensor, Tensor]:
    if isinstance(images, (Tensor, np.ndarray)):
        arr = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
        items = list(arr) if arr.dim() >= 1 else []
    elif isinstance(images, Sequence):
        items = [torch.as_tensor(np.asarray(im)) for im in images]
    else:
        raise ValueError(f'images must be an array or a sequence of arrays, got {type(images).__name__}')
    if len(items) == 0:
        raise ValueError('the source is empty: no images to fit')
    shapes = [tuple(im.shape) for im in items]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            raise ValueError(f'images of mixed sizes: image 0 has shape {shapes[0]} but image {i} '
                             f'has shape {s}; resize them to one size (or pass grid=)')
    if len(shapes[0]) not in (2, 3):
        raise ValueError(f'each image must be [H, W] or [H, W, C], got shape {shapes[0]}')
    x = torch.stack(items).to(torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    if not bool(torch.isfinite(x).all()):
        raise ValueError('images hold NaN or Inf values')
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError(f'image values must lie in [0, 1], got [{float(x.min()):g}, {float(x.max()):g}]')
    y = torch.as_tensor(np.asarray(labels)).reshape(-1)
    if y.numel() != x.shape[0]:
        raise ValueError(f'got {x.shape[0]} images but {y.numel()} labels')
    if y.dtype.is_floating_point and not bool((y == y.round()).all()):
        raise ValueError('labels must be integers')
    if y.numel() and int(y.min()) < 0:
        # Classes are 0 .. max label; a negative one would index outside them.
        i = int((y < 0).nonzero()[0])
        raise ValueError(f'labels must be class indices >= 0, got {y[i].item()} at position {i}')
    return x, y.to(torch.long)
