"""The run folder ``<out_dir>/<name>/``: refusing to overwrite a run,
atomic JSON/YAML writes, checkpoints with RNG state, ``metrics.json`` and
``curves.png``."""
from __future__ import annotations

import json
import os
import random
from typing import Any, Dict, List

import numpy as np
import torch
import yaml

from nngraph._atomic import atomic_path

__all__ = ['RunExistsError', 'prepare_run_dir', 'write_json', 'write_yaml', 'rng_state', 'set_rng_state',
           'save_checkpoint', 'plot_curves', 'run_metrics', 'write_metrics']


class RunExistsError(RuntimeError):
    """The run folder already holds a run (pass ``resume`` or ``overwrite``)."""


def prepare_run_dir(config: Dict[str, Any], resume: bool, overwrite: bool) -> str:
    """The run folder; refuses one that already holds a run unless ``resume``
    or ``overwrite`` (which clears it)."""
    run_dir = os.path.join(config['out_dir'], config['name'])
    existing = [f for f in ('metrics.json', 'checkpoint.pt') if os.path.exists(os.path.join(run_dir, f))]
    if existing and not (resume or overwrite):
        finished = _finished(run_dir)
        raise RunExistsError(
            f"{run_dir} already holds a {'finished' if finished else 'partial'} run "
            f"({', '.join(existing)}); pass --resume to continue it or --overwrite to start over")
    if overwrite and not resume:
        for f in ('metrics.json', 'checkpoint.pt', 'curves.png', 'config.yaml'):
            p = os.path.join(run_dir, f)
            if os.path.exists(p):
                os.unlink(p)
    return run_dir


def _finished(run_dir: str) -> bool:
    try:
        with open(os.path.join(run_dir, 'metrics.json')) as f:
            return bool(json.load(f).get('finished'))
    except (OSError, ValueError):
        return False


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)


def write_yaml(path: str, obj: Any) -> None:
    """Writes ``obj`` as YAML in key order, atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        yaml.safe_dump(obj, f, sort_keys=False)


def rng_state() -> Dict[str, Any]:
    """The states of every RNG a run draws from (torch, numpy, random, CUDA)."""
    state = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restores what :func:`rng_state` saved."""
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(path: str, **state) -> None:
    """Saves ``state`` with ``torch.save``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def plot_curves(path: str, history: List[Dict[str, Any]], title: str) -> None:
    """Train vs validation vs test accuracy (and loss) per epoch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (('train', '-o'), ('val', '--'), ('test', '-s')):
        if f'{split}_acc' in history[0]:
            axes[0].plot(epochs, [h[f'{split}_acc'] for h in history], style, label=split, markersize=3)
        if f'{split}_loss' in history[0]:
            axes[1].plot(epochs, [h[f'{split}_loss'] for h in history], style, label=split, markersize=3)
    axes[0].set_title('accuracy (train: augmented batches)')
    axes[1].set_title('loss')
    for ax in axes:
        ax.set_xlabel('epoch')
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)


def run_metrics(config, history, best, final, wall, extra=None) -> Dict[str, Any]:
    """The dict ``metrics.json`` holds: per-epoch history, selection, test, throughput."""
    times = [h['epoch_time_s'] for h in history if 'epoch_time_s' in h]
    n = sum(h['graphs_per_s'] * h['epoch_time_s'] for h in history if 'graphs_per_s' in h)
    m = {'name': config['name'], 'mode': config['mode'], 'epochs': history,
         'best_epoch': best['epoch'] if best else None,
         'best_val_acc': best['val_acc'] if best else None,
         'test_acc': final['acc'] if final else None, 'test_loss': final['loss'] if final else None,
         'wall_time_s': wall, 'train_graphs_per_s': n / sum(times) if times and sum(times) > 0 else None,
         'world_size': int(os.environ.get('WORLD_SIZE', '1'))}
    if extra:
        m.update(extra)
    return m


def write_metrics(run_dir, config, history, best, final, wall, finished, extra=None) -> None:
    """Writes :func:`run_metrics` (and whether the run finished) to ``metrics.json``."""
    m = run_metrics(config, history, best, final, wall, extra)
    m['finished'] = finished
    write_json(os.path.join(run_dir, 'metrics.json'), m)
