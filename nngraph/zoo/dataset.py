"""A PyG dataset of the parameter graphs of a model zoo, with regression targets."""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from nngraph.data.dataset import BuiltGraphDataset
from nngraph.graph import from_weights
from nngraph.zoo.build import read_zoo
from nngraph.zoo.plan import RUN_FIELDS

__all__ = ['ZooGraphDataset', 'TARGETS', 'split_runs']

# Per-checkpoint targets; every run field (RUN_FIELDS) is a target too.
CHECKPOINT_TARGETS = ('test_acc', 'train_acc', 'test_loss', 'train_loss', 'gap', 'epoch')
TARGETS = CHECKPOINT_TARGETS + tuple(f for f in RUN_FIELDS if f != 'activation')


def split_runs(num_runs: int, fractions: Sequence[float], seed: int) -> Dict[str, Tensor]:
    """Run ids of ``train``/``val``/``test``: a seeded permutation of the runs
    cut at ``fractions`` (rounded down for val and test, the rest train), so
    every checkpoint of a run is on one side.

    Raises:
        ValueError: fractions that are not three numbers in ``[0, 1]`` summing to 1.
    """
    f = [float(v) for v in fractions] if isinstance(fractions, (list, tuple)) else []
    if len(f) != 3 or not all(0 <= v <= 1 for v in f) or abs(sum(f) - 1) > 1e-6:
        raise ValueError(f'fractions must be three numbers in [0, 1] (train, val, test) summing to 1, '
                         f'got {fractions!r}')
    perm = torch.from_numpy(np.random.default_rng(int(seed)).permutation(int(num_runs)))
    n_val, n_test = int(num_runs * f[1]), int(num_runs * f[2])
    n_train = int(num_runs) - n_val - n_test
    return dict(train=perm[:n_train].sort().values, val=perm[n_train:n_train + n_val].sort().values,
                test=perm[n_train + n_val:].sort().values)


class ZooGraphDataset(BuiltGraphDataset):
    r"""One split of a model zoo (:func:`nngraph.zoo.build_zoo`) as parameter graphs.

    Each item is a :class:`~torch_geometric.data.Data` built by
    :func:`nngraph.from_weights` (every field of ``DESIGN.md``: the graph
    computes the classifier's logits from the flattened image) plus ``y``
    (float ``[1, 1]``: the target), ``run_id`` and ``epoch`` (long ``[1]``).
    Architectures (depth, width, activation) differ between items and batch
    together (:class:`torch_geometric.loader.DataLoader`); every graph has
    ``num_features`` inputs and ``num_classes`` outputs.

    Splits are by *run*: every checkpoint of one network is in one split
    (:func:`split_runs`, seeded), so a model cannot be judged on a later
    epoch of a network it trained on.

    Args:
        root: a zoo directory.
        split: ``'train'``, ``'val'`` or ``'test'``.
        target: what ``y`` holds: ``'test_acc'`` (default), ``'train_acc'``,
            ``'test_loss'``, ``'train_loss'``, ``'gap'`` (train minus test
            accuracy), ``'epoch'``, or a hyperparameter of the run
            (``'lr'``, ``'weight_decay'``, ``'init_scale'``, ``'label_noise'``,
            ``'train_fraction'``, ``'epochs'``, ``'depth'``, ``'width'``).
        epochs: which checkpoints: ``'all'``, ``'final'`` (each run's last),
            or a sequence of epochs (0 is the initialisation).
        architecture: only networks of these layer sizes
            (``(64, 16, 16, 10)``), e.g. for the flat-MLP baseline.
        activation: only networks of this activation (``'relu'``).
        seed: seeds the split of the runs.
        fractions: train/val/test fractions of the runs.
        transform: PyG transform applied on access.

    Raises:
        FileNotFoundError: no complete zoo in ``root``.
        ValueError: an unknown split or target, bad fractions, an ``epochs``
            that is not ``'all'``, ``'final'`` or a list of ints, a corrupt zoo file.
    """

    def __init__(self, root: Union[str, os.PathLike], split: str = 'train', target: str = 'test_acc', *,
                 epochs: Union[str, Sequence[int]] = 'all', architecture: Optional[Sequence[int]] = None,
                 activation: Optional[str] = None, seed: int = 0,
                 fractions: Sequence[float] = (0.7, 0.1, 0.2),
                 transform: Optional[Callable[[Data], Data]] = None) -> None:
        super().__init__(root, split, transform)
        if target not in TARGETS:
            raise ValueError(f'unknown target {target!r}; choose one of {TARGETS}')
        self.target = target
        zoo = read_zoo(self.path)
        ck, runs = zoo['checkpoints'], zoo['runs']
        self.activations: List[str] = list(zoo['activations'])
        self._architectures = [(tuple(int(d) for d in a['layer_sizes']), a['activation'], a['weights'], a['biases'])
                               for a in zoo['architectures']]
        self.test_x, self.test_y = zoo['test_x'], zoo['test_y']
        self._num_classes = int(zoo['num_classes'])
        self.runs = runs

        keep = torch.zeros(runs['run_id'].numel(), dtype=torch.bool)
        keep[split_runs(runs['run_id'].numel(), fractions, seed)[split]] = True
        rows = keep[ck['run_id']]
        rows &= self._epoch_rows(epochs, ck, runs)
        if architecture is not None or activation is not None:
            ok = torch.tensor([(architecture is None or sizes == tuple(int(d) for d in architecture))
                               and (activation is None or act == activation)
                               for sizes, act, _, _ in self._architectures], dtype=torch.bool)
            rows &= ok[ck['architecture']]
        idx = rows.nonzero().squeeze(1)
        self.checkpoints: Dict[str, Tensor] = {k: v[idx] for k, v in ck.items()}
        self._y = self._target(target, self.checkpoints, runs).float()

    @staticmethod
    def _epoch_rows(epochs, ck: Dict[str, Tensor], runs: Dict[str, Tensor]) -> Tensor:
        if isinstance(epochs, str):
            if epochs == 'all':
                return torch.ones_like(ck['epoch'], dtype=torch.bool)
            if epochs == 'final':
                return ck['epoch'] == runs['epochs'][ck['run_id']]
            raise ValueError(f"epochs must be 'all', 'final' or a list of epochs, got {epochs!r}")
        try:
            wanted = torch.tensor([int(e) for e in epochs], dtype=torch.long)
        except (TypeError, ValueError):
            raise ValueError(f"epochs must be 'all', 'final' or a list of epochs, got {epochs!r}") from None
        return torch.isin(ck['epoch'], wanted)

    @staticmethod
    def _target(target: str, ck: Dict[str, Tensor], runs: Dict[str, Tensor]) -> Tensor:
        if target == 'gap':
            return ck['train_acc'] - ck['test_acc']
        if target in CHECKPOINT_TARGETS:
            return ck[target]
        return runs[target][ck['run_id']]

    # --- PyG Dataset interface ------------------------------------------------
    def len(self) -> int:
        """Number of checkpoints in this split (after the selections)."""
        return int(self._y.numel())

    def get(self, idx: int) -> Data:
        """The parameter graph of checkpoint ``idx``, built on access."""
        k = int(idx)
        a, pos = int(self.checkpoints['architecture'][k]), int(self.checkpoints['position'][k])
        _, act, weights, biases = self._architectures[a]
        return from_weights([w[pos] for w in weights], [b[pos] for b in biases], activation=act,
                            y=self._y[k].view(1, 1), run_id=self.checkpoints['run_id'][k:k + 1],
                            epoch=self.checkpoints['epoch'][k:k + 1])

    # --- what the dataset is --------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes of the zoo's task: the output width of every network."""
        return self._num_classes

    @property
    def num_features(self) -> int:
        """Input width of every network (the flattened image's size)."""
        return int(self.test_x.shape[1])

    @property
    def y(self) -> Tensor:
        """Targets of all items ``[len]`` (no graph building)."""
        return self._y

    @property
    def run_id(self) -> Tensor:
        """Run of every item ``[len]``."""
        return self.checkpoints['run_id']

    @property
    def epoch(self) -> Tensor:
        """Epoch of every item ``[len]``."""
        return self.checkpoints['epoch']

    @property
    def architectures(self) -> List[Tuple[Tuple[int, ...], str]]:
        """``(layer_sizes, activation)`` of every architecture of the zoo."""
        return [(sizes, act) for sizes, act, _, _ in self._architectures]

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.path!r}, split={self.split!r}, target={self.target!r}, '
                f'len={len(self)})')
