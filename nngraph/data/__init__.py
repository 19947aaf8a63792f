"""Datasets of INR parameter graphs: the built-in digits-INR, published formats, splits, views.

* :func:`build_inr_dataset` fits a multi-view INR dataset (``source='digits'``
  ships with scikit-learn, nothing downloads), split by object and stored
  one file per split, atomically; ``--shard i/n`` builds and
  :func:`merge_shards` joins slices.
* :class:`INRGraphDataset` serves one split as PyG parameter graphs, with
  ``views`` choosing how many INRs of each training object are used; it also
  reads the DWSNets, neural-graphs and NFN INR datasets
  (:mod:`nngraph.data.published`).
* ``python -m nngraph.data build | merge | show`` is the command line.
"""
from nngraph.data.build import DEFAULTS, build_inr_dataset, merge_shards, split_objects
from nngraph.data.dataset import INRGraphDataset
from nngraph.data.published import load_published
from nngraph.data.sources import load_source

__all__ = ['build_inr_dataset', 'merge_shards', 'split_objects', 'INRGraphDataset',
           'load_published', 'load_source', 'DEFAULTS']
