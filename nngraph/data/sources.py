"""Image sources for INR datasets: the built-in ``digits`` and user arrays.

A source is a float tensor of images ``[N, H, W, C]`` with values in
``[0, 1]`` and long labels ``[N]``. ``digits`` is scikit-learn's copy of the
UCI handwritten digits (1,797 images of 8x8 pixels, 16 grey levels), which
ships inside scikit-learn: nothing is downloaded.
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SOURCES = ('digits',)

Source = Union[str, Tuple[Any, Any]]


def load_source(source: Source, grid: int | None = None) -> Tuple[Tensor, Tensor, str]:
    """Loads ``source`` as ``(images [N, H, W, C] float32 in [0, 1], labels [N] long, name)``.

    Args:
        source: ``'digits'``, or a pair ``(images, labels)`` where ``images``
            is an array ``[N, H, W]`` / ``[N, H, W, C]`` or a sequence of
            equally-sized ``[H, W]`` / ``[H, W, C]`` arrays with values in
            ``[0, 1]``, and ``labels`` are ``N`` integers.
        grid: if given, images are resized (bilinear, corners aligned) to
            ``grid x grid`` pixels.

    Raises:
        ValueError: an unknown source name, no images, images of mixed sizes
            (the first two differing shapes named), values outside
            ``[0, 1]`` or not finite, labels that do not match.
    """
    if isinstance(source, str):
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
    if grid is not None:
        if int(grid) < 1:
            raise ValueError(f'grid must be a positive number of pixels, got {grid}')
        if tuple(images.shape[1:3]) != (grid, grid):
            images = F.interpolate(images.permute(0, 3, 1, 2), size=(int(grid), int(grid)),
                                   mode='bilinear', align_corners=True).permute(0, 2, 3, 1)
            images = images.clamp(0.0, 1.0).contiguous()
    return images, labels, name


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
    return x, y.to(torch.long)
