"""Model zoos: many small MLP classifiers trained at once, and their parameter graphs.

The second task of weight-space learning, beside INR classification: predict
a trained network's properties (its test accuracy, its hyperparameters) from
its weights (Unterthiner et al. 2020).

* :func:`build_zoo` trains a zoo on ``digits`` (the quick default) or
  ``fashion-mnist``: hyperparameters sampled per network
  (:mod:`nngraph.zoo.plan`), networks of one architecture trained as one batch
  (:mod:`nngraph.zoo.fitting`), checkpoints at several epochs; sharded,
  resumable, atomic, with a manifest (:mod:`nngraph.zoo.build`).
* :class:`ZooGraphDataset` serves its checkpoints as PyG parameter graphs
  with a float target, split by run.
* ``python -m nngraph.zoo build | merge | show`` is the command line;
  ``python -m nngraph.zoo.report RUNS`` tabulates the accuracy-prediction runs
  of ``configs/zoo-*.yaml`` (``train.py`` with ``data.source: zoo``).
"""
from nngraph.zoo.build import build_zoo, merge_zoo_shards, read_zoo, zoo_root
from nngraph.zoo.dataset import TARGETS, ZooGraphDataset, split_runs
from nngraph.zoo.fitting import train_networks
from nngraph.zoo.plan import DEFAULTS, FMNIST_DEFAULTS, defaults_for, sample_runs

__all__ = ['build_zoo', 'merge_zoo_shards', 'read_zoo', 'zoo_root', 'ZooGraphDataset', 'split_runs', 'TARGETS',
           'train_networks', 'sample_runs', 'defaults_for', 'DEFAULTS', 'FMNIST_DEFAULTS']
