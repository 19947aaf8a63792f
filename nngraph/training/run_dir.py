"""The run folder ``<out_dir>/<name>/``: refusing to overwrite a run,
atomic JSON/YAML writes, checksummed checkpoints with RNG state,
``metrics.json`` and ``curves.png``."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import struct
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
import yaml

from nngraph._atomic import atomic_path
from nngraph.training.config import check_resume, flatten

__all__ = ['RunExistsError', 'CheckpointError', 'prepare_run_dir', 'write_json', 'write_yaml', 'rng_state',
           'set_rng_state', 'save_checkpoint', 'load_checkpoint', 'resume_checkpoint', 'probe_checkpoint',
           'plot_curves', 'run_metrics', 'write_metrics', 'write_predictions']


class RunExistsError(RuntimeError):
    """The run folder already holds a run (pass ``resume`` or ``overwrite``)."""


class CheckpointError(ValueError):
    """A checkpoint file that is refused: empty, truncated, changed since it
    was written, not written by nngraph, or holding anything but tensors,
    numbers, strings and containers. The message names the file."""


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
        for f in ('metrics.json', 'checkpoint.pt', 'curves.png', 'config.yaml', 'predictions.csv'):
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
    """The states of every RNG a run draws from (torch, numpy, random, CUDA),
    as tensors, numbers and strings only, so that a checkpoint holding them
    reads back with ``torch.load(weights_only=True)``."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {'torch': torch.get_rng_state(),
             'numpy': {'name': str(name), 'key': torch.from_numpy(key.astype(np.int64)), 'pos': int(pos),
                       'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
             # Mersenne Twister words are < 2**32: exact in int64
             'python': {'version': int(version), 'state': torch.tensor(internal, dtype=torch.int64),
                        'gauss_next': gauss_next}}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restores what :func:`rng_state` saved."""
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['name'], n['key'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(p['state'].tolist()), p['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


# A checkpoint is an ordinary torch.save file (a zip archive, so torch.load
# still reads it) whose zip comment holds the sha256 of every byte before
# the comment. The end-of-central-directory record is the archive's last 22
# bytes, its last two the comment's length; torch.save writes no comment.
_CHECKSUM_TAG = b'nngraph-sha256:'
_COMMENT_LEN = len(_CHECKSUM_TAG) + 64
_EOCD = b'PK\x05\x06'


def save_checkpoint(path: str, **state) -> None:
    """Saves ``state`` (tensors, numbers, strings and containers only) with
    ``torch.save``, a sha256 of the bytes in the archive's comment,
    atomically: a reader sees the previous checkpoint or the complete new one."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    if len(data) < 22 or bytes(data[-22:-18]) != _EOCD or bytes(data[-2:]) != b'\0\0':
        raise RuntimeError('torch.save wrote an archive nngraph cannot checksum (no plain end record)')
    # body = the archive with its comment length set; hashed and written without a copy
    length = struct.pack('<H', _COMMENT_LEN)
    digest = hashlib.sha256(data[:-2])
    digest.update(length)
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data[:-2])
            f.write(length + _CHECKSUM_TAG + digest.hexdigest().encode('ascii'))


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Reads what :func:`save_checkpoint` wrote, on the CPU, after checking
    its sha256; with ``torch.load(weights_only=True)``, so no code in the file
    ever runs. Raises :class:`CheckpointError` (a ``ValueError`` naming the
    file) for an empty, truncated, changed or foreign file, or one holding
    anything but tensors, numbers, strings and containers."""
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise CheckpointError(f'checkpoint {path} cannot be read: {err.strerror or err}') from None
    if not data:
        raise CheckpointError(f'checkpoint {path} is empty (0 bytes); it was never written completely')
    tag = data[-_COMMENT_LEN:-64]
    if tag != _CHECKSUM_TAG or data[-_COMMENT_LEN - 2:-_COMMENT_LEN] != struct.pack('<H', _COMMENT_LEN):
        raise CheckpointError(f'checkpoint {path} carries no nngraph checksum: it is truncated, or was not '
                              'written by this version of nngraph (start the run over with --overwrite)')
    body, expected = data[:-_COMMENT_LEN], data[-64:]
    if hashlib.sha256(body).hexdigest().encode('ascii') != expected:
        raise CheckpointError(f'checkpoint {path} is corrupt: its bytes do not match the sha256 it was '
                              'written with (changed or damaged since); refused')
    try:
        state = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'checkpoint {path} holds something other than tensors, numbers, strings and containers '
            f'(a pickled object or code); refused without running it: {str(err).splitlines()[0]}') from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f'checkpoint {path} cannot be read by torch.load: '
                              f'{str(err).splitlines()[0] if str(err) else type(err).__name__}') from None
    if not isinstance(state, dict):
        raise CheckpointError(f'checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict')
    return state


#: What a training checkpoint holds (the supervised loop adds ``best``).
CHECKPOINT_KEYS = ('model', 'optimizer', 'scheduler', 'epoch', 'history', 'rng', 'config')


def resume_checkpoint(config: Dict[str, Any], run_dir: str) -> Optional[Dict[str, Any]]:
    """The checkpoint ``--resume`` continues from (``None`` when the run
    folder has none yet): read and verified (:func:`load_checkpoint`), and
    made with the same config up to execution keys and a larger
    ``optim.epochs`` (:func:`~nngraph.training.config.check_resume`). Runs
    before anything is written, so a refused resume leaves the folder as it was."""
    path = os.path.join(run_dir, 'checkpoint.pt')
    if not os.path.exists(path):
        return None
    ck = load_checkpoint(path)
    missing = [k for k in CHECKPOINT_KEYS if k not in ck]
    if config['mode'] == 'supervised' and 'best' not in ck:
        missing.append('best')
    if missing or not isinstance(ck['config'], dict) or not isinstance(ck['epoch'], int):
        raise CheckpointError(f'checkpoint {path} is not a training checkpoint of nngraph '
                              f'(missing {missing or "a config dict and an epoch number"})')
    check_resume(ck['config'], config, path)
    return ck


def probe_checkpoint(config: Dict[str, Any]) -> Dict[str, Any]:
    """The contrastive checkpoint of ``probe.checkpoint`` (a run folder or
    its ``checkpoint.pt``) that mode ``probe`` reads, verified, and made with
    this config's ``model`` and ``contrastive.projection_dim`` (one
    ``ValueError`` naming each key that differs)."""
    path = config['probe']['checkpoint']
    if os.path.isdir(path):
        path = os.path.join(path, 'checkpoint.pt')
    if not os.path.exists(path):
        raise ValueError(f'probe.checkpoint {path} does not exist; name a contrastive run folder or its '
                         'checkpoint.pt')
    ck = load_checkpoint(path)
    if 'model' not in ck or not isinstance(ck.get('config'), dict):
        raise CheckpointError(f'checkpoint {path} holds no model and config of a contrastive run')
    old, new = flatten(ck['config']), flatten(config)
    keys = [k for k in new if k.startswith('model.')] + ['contrastive.projection_dim']
    changed = [f'{k}: {old[k]!r} -> {new[k]!r}' for k in keys if k in old and old[k] != new[k]]
    if changed:
        raise ValueError(f'probe.checkpoint {path} holds another encoder than this config builds '
                         f'({"; ".join(changed)}); probe it with the config it was trained with')
    ck['path'] = path
    return ck


def plot_curves(path: str, history: List[Dict[str, Any]], title: str, metric: str = 'acc') -> None:
    """Train vs validation vs test ``metric`` (``'acc'``, or ``'tau'`` for a
    regression) and loss per epoch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (('train', '-o'), ('val', '--'), ('test', '-s')):
        if f'{split}_{metric}' in history[0]:
            axes[0].plot(epochs, [h[f'{split}_{metric}'] for h in history], style, label=split, markersize=3)
        if f'{split}_loss' in history[0]:
            axes[1].plot(epochs, [h[f'{split}_loss'] for h in history], style, label=split, markersize=3)
    axes[0].set_title(f"{ {'acc': 'accuracy', 'tau': 'Kendall tau'}.get(metric, metric)} (train: augmented batches)")
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
    """The dict ``metrics.json`` holds: per-epoch history, selection, test,
    throughput. A regression run (selected on ``val_tau``) reports the test
    split's Kendall tau, R^2, MAE and loss of the selected model."""
    times = [h['epoch_time_s'] for h in history if 'epoch_time_s' in h]
    n = sum(h['graphs_per_s'] * h['epoch_time_s'] for h in history if 'graphs_per_s' in h)
    m = {'name': config['name'], 'mode': config['mode'], 'epochs': history,
         'best_epoch': best['epoch'] if best else None}
    if best and 'val_tau' in best:
        m['task'] = 'regression'
        m['target'] = config['data']['target'] or 'test_acc'
        m['best_val_tau'] = best['val_tau']
        chosen = [h for h in history if h['epoch'] == best['epoch']]
        for k in ('r2', 'mae', 'loss'):
            m[f'best_val_{k}'] = chosen[0][f'val_{k}'] if chosen else None
        for k in ('tau', 'r2', 'mae', 'loss'):
            m[f'test_{k}'] = final[k] if final else None
    else:
        m.update({'best_val_acc': best['val_acc'] if best else None,
                  'test_acc': final['acc'] if final else None, 'test_loss': final['loss'] if final else None})
    m.update({'wall_time_s': wall, 'train_graphs_per_s': n / sum(times) if times and sum(times) > 0 else None,
              'world_size': int(os.environ.get('WORLD_SIZE', '1'))})
    if extra:
        m.update(extra)
    return m


def write_metrics(run_dir, config, history, best, final, wall, finished, extra=None) -> None:
    """Writes :func:`run_metrics` (and whether the run finished) to ``metrics.json``."""
    m = run_metrics(config, history, best, final, wall, extra)
    m['finished'] = finished
    write_json(os.path.join(run_dir, 'metrics.json'), m)


def write_predictions(path: str, predictions: Dict[str, Any]) -> None:
    """Writes a regression's test predictions as CSV (``run_id, epoch, y,
    pred``: one row per checkpoint), atomically: the scatter plot of
    ``results/zoo.md`` and any later analysis read it."""
    cols = [predictions[k].tolist() for k in ('run_id', 'epoch', 'y', 'pred')]
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        f.write('run_id,epoch,y,pred\n')
        f.writelines(f'{int(r)},{int(e)},{y:.8g},{p:.8g}\n' for r, e, y, p in zip(*cols))
