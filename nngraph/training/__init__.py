"""The loops ``train.py`` drives: configuration, data, models, supervised
training, SimCLR contrastive pretraining and the linear probe, on one process
or several (``torchrun``, DistributedDataParallel).

A run is a plain nested dict (:data:`DEFAULTS` lists every key); it writes
``<out_dir>/<name>/`` with ``config.yaml``, ``metrics.json``,
``checkpoint.pt`` and ``curves.png``. Everything here is library code: the
command line in ``train.py`` is a thin reader over it.

One stage per module, in the order :func:`run` calls them:

- :mod:`~nngraph.training.config`: :data:`DEFAULTS`, YAML, overrides, checks;
- :mod:`~nngraph.training.distributed`: one process or several;
- :mod:`~nngraph.training.run_dir`: the run folder, checkpoints, metrics, curves;
- :mod:`~nngraph.training.data`: transforms, datasets, the training loader;
- :mod:`~nngraph.training.models`: the model ``model.name`` names, its standardisation;
- :mod:`~nngraph.training.losses`: objectives and the learning-rate schedule;
- :mod:`~nngraph.training.tasks`: classification, or regression of a model zoo's
  float target (:mod:`~nngraph.training.metrics`: Kendall's tau, R^2, MAE);
- :mod:`~nngraph.training.loops`: supervised training and evaluation;
- :mod:`~nngraph.training.contrastive`: SimCLR pretraining and the linear probe.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from nngraph.training.config import (DEFAULTS, EXECUTION_KEYS, MODES, apply_overrides, load_config, merge_config,
                                     validate)
from nngraph.training.contrastive import TwoViews, contrastive_and_probe, embed, linear_probe
from nngraph.training.data import (ListDataset, OneHotLabel, build_datasets, build_transforms, toy_dataset,
                                   train_loader)
from nngraph.training.distributed import Distributed
from nngraph.training.loops import NonFiniteLossError, evaluate, supervised
from nngraph.training.losses import hard_labels, nt_xent, soft_cross_entropy, warmup_cosine
from nngraph.training.metrics import kendall_tau, mean_absolute_error, r2_score, regression_metrics
from nngraph.training.models import (ContrastiveModel, build_encoder, build_model, encoder_kwargs,
                                     fit_normalization)
from nngraph.training.run_dir import (CheckpointError, RunExistsError, load_checkpoint, prepare_run_dir, probe_checkpoint,
                                      resume_checkpoint, save_checkpoint, write_json, write_yaml)

__all__ = [
    'DEFAULTS', 'MODES', 'load_config', 'merge_config', 'apply_overrides', 'validate', 'soft_cross_entropy',
    'hard_labels', 'nt_xent', 'warmup_cosine', 'build_transforms', 'build_datasets', 'toy_dataset', 'ListDataset',
    'OneHotLabel', 'train_loader', 'build_model', 'build_encoder', 'encoder_kwargs', 'fit_normalization',
    'ContrastiveModel', 'Distributed', 'evaluate', 'TwoViews', 'embed', 'linear_probe', 'prepare_run_dir',
    'save_checkpoint', 'load_checkpoint', 'write_json', 'write_yaml', 'run', 'RunExistsError', 'CheckpointError',
    'NonFiniteLossError', 'EXECUTION_KEYS', 'kendall_tau', 'r2_score', 'mean_absolute_error', 'regression_metrics',
]


def run(config: Dict[str, Any], resume: bool = False, overwrite: bool = False,
        progress: bool = True) -> Dict[str, Any]:
    """Runs the experiment ``config`` describes (see :data:`DEFAULTS`) and
    returns its metrics (what ``metrics.json`` holds; on every process).

    Args:
        config: a resolved config (:func:`load_config`).
        resume: continue from ``checkpoint.pt`` of the run folder; refused
            (``ValueError`` naming each key) when its config differs in more
            than :data:`EXECUTION_KEYS` and a larger ``optim.epochs``.
        overwrite: clear an existing run folder first.
        progress: tqdm bars (rank 0 only).
    """
    # Every check that can refuse the run comes before anything is written:
    # the config's values, the checkpoint a resume continues (its bytes and
    # its config), the checkpoint a probe reads. config.yaml then records
    # what the run folder's checkpoint was made with.
    validate(config)
    run_dir = os.path.join(config['out_dir'], config['name'])
    checkpoint = resume_checkpoint(config, run_dir) if resume else None
    probed = probe_checkpoint(config) if config['mode'] == 'probe' else None
    dist_ = Distributed(config['device'])
    try:
        if dist_.main:
            prepare_run_dir(config, resume, overwrite)
            write_yaml(os.path.join(run_dir, 'config.yaml'), config)
        dist_.barrier()
        if config['mode'] == 'supervised':
            return supervised(config, run_dir, dist_, checkpoint, progress)
        return contrastive_and_probe(config, run_dir, dist_, checkpoint, progress, probed)
    finally:
        dist_.close()
