"""A PyG dataset of INR parameter graphs, built from stacked weights on access."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Data, Dataset

from nngraph.data import store
from nngraph.graph import from_weights

__all__ = ['INRGraphDataset', 'BuiltGraphDataset']

FORMATS = ('auto', 'nngraph', 'dwsnets', 'neural-graphs', 'nfn')


class BuiltGraphDataset(Dataset):
    """A PyG :class:`~torch_geometric.data.Dataset` over a build on disk (an
    INR dataset, a model zoo): nothing to download, nothing to process, the
    graphs made on access by the subclass's ``len`` and ``get``. Checks the
    split's name and records ``path`` (``~`` expanded) and ``split``."""

    def __init__(self, root: Union[str, os.PathLike], split: str,
                 transform: Optional[Callable[[Data], Data]] = None) -> None:
        super().__init__(root=None, transform=transform)
        if split not in store.SPLITS:
            raise ValueError(f'unknown split {split!r}; choose one of {store.SPLITS}')
        self.path = os.path.expanduser(os.fspath(root))
        self.split = split

    @property
    def raw_file_names(self) -> List[str]:
        """None: PyG's download step does not apply (data is built or read in place)."""
        return []

    @property
    def processed_file_names(self) -> List[str]:
        """None: PyG's process step does not apply."""
        return []


class INRGraphDataset(BuiltGraphDataset):
    r"""One split of an INR dataset as parameter graphs (:func:`nngraph.from_weights`).

    Each item is a :class:`~torch_geometric.data.Data` with the graph fields
    of ``DESIGN.md`` plus ``y`` (long ``[1]``), ``object_id`` (long ``[1]``:
    the image it represents), ``view_id`` (long ``[1]``: which independently
    fitted INR of that image) and ``convention`` (the SIREN conventions, see
    :func:`nngraph.inr.parse_convention`). The graph computes the whole INR,
    output offset included. Weights stay stacked in memory (one tensor per
    layer); a graph is built when it is accessed.

    Args:
        root: a directory built by :func:`nngraph.data.build_inr_dataset`, or
            a published dataset (``format`` below).
        split: ``'train'``, ``'val'`` or ``'test'``.
        views: use the first ``views`` views of every object of this split
            (``None``: all that were built). The paper's main knob.
        objects_per_class: use only the first ``objects_per_class`` objects
            (by object id) of every class (``None``: all). With ``views``,
            trades objects for views at a fixed number of INRs.
        transform: PyG transform applied on access.
        format: ``'auto'`` (a ``manifest.json`` means ``'nngraph'``, a splits
            JSON means ``'dwsnets'``, ``{prefix}_{label}s/net{idx}.pth``
            folders mean ``'nfn'``), or one of those names;
            see :mod:`nngraph.data.published` for the published layouts.
        **format_options: options of the published-format loader
            (``splits_file``, ``prefix``, ``split_points``, ...).

    Raises:
        FileNotFoundError: no complete build in ``root``, or a split file
            missing (named).
        ValueError: an unknown split, a truncated or corrupt split file
            (named), ``views`` beyond what was built for this split (or for
            one of the selected objects, in a build that gave all views only
            to its first objects of each class), ``objects_per_class`` below 1.
    """

    def __init__(self, root: Union[str, os.PathLike], split: str = 'train', views: Optional[int] = None,
                 transform: Optional[Callable[[Data], Data]] = None, *, format: str = 'auto',
                 objects_per_class: Optional[int] = None, **format_options: Any) -> None:
        super().__init__(root, split, transform)
        if format not in FORMATS:
            raise ValueError(f'unknown dataset format {format!r}; choose one of {FORMATS}')
        if format == 'auto':
            from nngraph.data.published import detect_format
            format = detect_format(self.path)
        self.format = format
        if format == 'nngraph':
            if format_options:
                raise TypeError(f'options {sorted(format_options)} are for published formats only')
            record = store.read_split(self.path, split)
            self.manifest = store.read_manifest(self.path)
        else:
            from nngraph.data.published import load_published
            record = load_published(self.path, format, split, **format_options)
            self.manifest = None
        self._set(record, views, objects_per_class)

    def _set(self, record: Dict[str, Any], views: Optional[int], objects_per_class: Optional[int]) -> None:
        view_id = record['view_id']
        built = int(view_id.max()) + 1 if view_id.numel() else 0
        if views is not None:
            if int(views) < 1:
                raise ValueError(f'views must be at least 1, got {views}')
            if int(views) > built:
                raise ValueError(f'views={views} but split {self.split!r} of {self.path!r} was built '
                                 f'with {built} view(s) per object; build more views or ask for fewer')
            keep = (view_id < int(views)).nonzero().squeeze(1)
        else:
            keep = torch.arange(view_id.numel())
        if objects_per_class is not None:
            keep = keep[store.first_objects(record['object_id'][keep].long(), record['y'][keep].long(),
                                       int(objects_per_class))]
        if views is not None and keep.numel():
            # A build may give only its first objects of each class all views
            # (build_inr_dataset(views_objects_per_class=...)): refuse a request
            # that would mix objects of several views with single-view ones.
            objects, counts = torch.unique(record['object_id'][keep], return_counts=True)
            short = objects[counts < int(views)]
            if short.numel():
                raise ValueError(
                    f'views={views} but {short.numel()} object(s) of split {self.split!r} of '
                    f'{self.path!r} have fewer views (e.g. object {int(short[0])}: the build gave all '
                    f'views only to its first objects of each class); ask for fewer objects_per_class')
        self.views = built if views is None else int(views)
        self.objects_per_class = objects_per_class
        self._weights: List[Tensor] = [w[keep].contiguous() for w in record['weights']]
        self._biases: List[Tensor] = [b[keep].contiguous() for b in record['biases']]
        self._y = record['y'][keep].long()
        self._object_id = record['object_id'][keep].long()
        self._view_id = view_id[keep].long()
        self.psnr = record['psnr'][keep] if record.get('psnr') is not None else None
        self.images = record.get('images')
        self.image_object_id = record.get('image_object_id')
        act = record['activation']
        self._activation = act if isinstance(act, str) else tuple(act)
        self._convention = record['convention']
        self._layer_sizes = tuple(int(d) for d in record['layer_sizes'])
        self._num_classes = record.get('num_classes')

    # --- PyG Dataset interface ------------------------------------------------
    def len(self) -> int:
        """Number of INRs in this split (after the ``views`` selection)."""
        return int(self._y.numel())

    def get(self, idx: int) -> Data:
        """The parameter graph of INR ``idx``, built from the stacked weights."""
        k = int(idx)
        return from_weights([w[k] for w in self._weights], [b[k] for b in self._biases],
                            activation=self._activation, y=self._y[k:k + 1],
                            object_id=self._object_id[k:k + 1], view_id=self._view_id[k:k + 1],
                            convention=self._convention)

    # --- what the dataset is --------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes (labels are ``0 .. num_classes - 1``)."""
        if self._num_classes is not None:
            return int(self._num_classes)
        if self.manifest is not None:
            return int(self.manifest['num_classes'])
        return int(self._y.max()) + 1 if self._y.numel() else 0

    @property
    def layer_sizes(self) -> Tuple[int, ...]:
        """Widths ``(d_0, ..., d_L)`` of every INR."""
        return self._layer_sizes

    @property
    def activation(self):
        """The graphs' ``activation`` field (``'sine:30.0'``)."""
        return self._activation

    @property
    def convention(self) -> str:
        """The SIREN conventions string (:func:`nngraph.inr.parse_convention`)."""
        return self._convention

    @property
    def y(self) -> Tensor:
        """Labels of all items, ``[len]`` (no graph building)."""
        return self._y

    @property
    def object_id(self) -> Tensor:
        """Object (image) of every item, ``[len]``."""
        return self._object_id

    @property
    def view_id(self) -> Tensor:
        """View of every item, ``[len]``."""
        return self._view_id

    def stacked_weights(self) -> Tuple[List[Tensor], List[Tensor]]:
        """All items' parameters, stacked: ``([len, d_{l+1}, d_l]...)``,
        ``([len, d_{l+1}]...)``; the tensors graphs are built from."""
        return self._weights, self._biases

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.path!r}, split={self.split!r}, '
                f'views={self.views}, len={len(self)})')
