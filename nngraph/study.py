"""The augmentation study: a grid of ordinary ``train.py`` runs and the
report generated from their run folders.

    python -m nngraph.study configs/study-digits.yaml            # the grid, then the report
    python -m nngraph.study configs/study-digits.yaml --quick    # the pipeline at toy size (CI)
    python -m nngraph.study configs/study-digits.yaml --report   # regenerate the report only

A study YAML names a dataset (built once, before any cell), a ``base``
train.py config, the ``models`` and ``seeds``, and ``rows``: each row is a
config update (``transforms``, ``data.views``, ``mode`` ...) merged into
``base``. Every (model, row, seed) is a cell: ``<runs_dir>/<name>/<cell>/``
is a train.py run folder and ``<runs_dir>/<name>/configs/<cell>.yaml`` its
input, so ``python train.py --config <that file> --overwrite`` re-runs one
cell alone. A row with ``best_of`` is the best combination: from each listed
family of rows, the one with the highest mean *validation* accuracy (per
model), kept only if it beats ``baseline``; its configs are merged in
family order (transforms concatenated) and the choice is written to
``selection.json``.

Re-running the command skips finished cells whose config is unchanged
(keys that only say how a cell runs, :data:`EXECUTION_KEYS` such as
``compile``, may change), resumes interrupted ones from their checkpoint
and runs the rest. The report (``<results>.md``, ``<results>.png``) is
computed from the run folders' ``metrics.json`` only.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml
from tqdm.auto import tqdm

from nngraph import training
from nngraph._atomic import atomic_path

__all__ = ['load_study', 'cells', 'run_study', 'collect', 'write_report', 'choose_best', 'main']

#: Keys a study YAML may set, with their defaults.
STUDY_DEFAULTS: Dict[str, Any] = {
    'name': None,              # default: the YAML file's stem
    'runs_dir': 'runs',        # cells go to <runs_dir>/<name>/
    'results': None,           # report path without extension (default: results/<name>)
    'workers': 2,              # cells run at once, each a train.py process
    'threads': 1,              # torch threads per cell
    'seeds': [0, 1, 2],
    'dataset': {},             # nngraph.data.build_inr_dataset arguments (source, out, views, ...)
    'base': {},                # train.py config every cell starts from
    'models': {},              # model name -> config update (e.g. {model: {name: flat}})
    'rows': [],                # {name, label, config} or {name, label, best_of, baseline};
                               # any row may add `published`: the published figure, shown beside,
                               # `seeds` (its own) and `models` (the models that run it; default all)
    'curves': [],              # rows whose train/test curves the figure shows
    'quick': {},               # --quick: a study update that makes the grid tiny
    'notes': '',               # Markdown printed under the table: sources, how to read it
}

TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'train.py')


# --------------------------------------------------------------------------- #
# The study config
# --------------------------------------------------------------------------- #

def load_study(path: str, quick: bool = False) -> Dict[str, Any]:
    """The study config of ``path`` (``quick``: with its ``quick`` update
    merged in), with defaults filled and every row checked."""
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: a study config must be a mapping, got {type(raw).__name__}')
    unknown = sorted(set(raw) - set(STUDY_DEFAULTS))
    if unknown:
        raise ValueError(f'{path}: unknown study keys {unknown}; valid keys are {sorted(STUDY_DEFAULTS)}')
    study = {**copy.deepcopy(STUDY_DEFAULTS), **raw}
    if quick:
        study = _merge(study, study['quick'])
        # toy size: every row on the quick seeds, including rows that name their
        # own, and every cell eager (compiling would take longer than the toy
        # run): execution keys go from each part a cell's config is merged from
        def eager(update):
            return _experiment(update) if isinstance(update, dict) else update
        study['base'] = eager(study['base'])
        study['models'] = {m: eager(u) for m, u in study['models'].items()}
        study['rows'] = [{k: eager(v) if k == 'config' else v for k, v in r.items() if k != 'seeds'}
                         for r in study['rows']]
    study['name'] = study['name'] or os.path.splitext(os.path.basename(path))[0]
    study['results'] = study['results'] or os.path.join('results', study['name'])
    _check_rows(study, path)
    return study


def _merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (update or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _check_rows(study: Dict[str, Any], path: str) -> None:
    if not study['models']:
        raise ValueError(f'{path}: models is empty; name at least one, e.g. gnn: {{model: {{name: gnn}}}}')
    if not study['seeds']:
        raise ValueError(f'{path}: seeds is empty')
    names = [r.get('name') for r in study['rows']]
    if not names or any(not isinstance(n, str) for n in names):
        raise ValueError(f'{path}: every row needs a name (got {names})')
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f'{path}: duplicate row names {dup}')
    for row in study['rows']:
        extra = sorted(set(row) - {'name', 'label', 'config', 'best_of', 'baseline', 'published', 'seeds',
                                   'models'})
        if extra:
            raise ValueError(f"{path}: row {row['name']!r} has unknown keys {extra}")
        unknown = sorted(set(row.get('models', [])) - set(study['models']))
        if unknown:
            raise ValueError(f"{path}: row {row['name']!r} names unknown models {unknown}; "
                             f"the study's models are {sorted(study['models'])}")
        for family in row.get('best_of', []):
            missing = [n for n in family if n not in names or n == row['name']]
            if missing:
                raise ValueError(f"{path}: row {row['name']!r}: best_of names unknown rows {missing}")
        if 'best_of' in row and row.get('baseline') not in names:
            raise ValueError(f"{path}: row {row['name']!r} needs baseline: the row a choice must beat")
    for name in study['curves']:
        if name not in names:
            raise ValueError(f'{path}: curves names unknown row {name!r}')


def row_seeds(study: Dict[str, Any], row: Dict[str, Any]) -> List[int]:
    """The seeds of ``row``: its own ``seeds`` (a long row run on fewer seeds
    than the grid) or the study's."""
    return [int(s) for s in row.get('seeds', study['seeds'])]


def cell_name(model: str, row: str, seed: int) -> str:
    """The run folder name of one cell."""
    return f'{model}-{row}-seed{seed}'


def study_dir(study: Dict[str, Any]) -> str:
    return os.path.join(study['runs_dir'], study['name'])


def cell_config(study: Dict[str, Any], model: str, row: Dict[str, Any], seed: int,
                update: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The resolved train.py config of one cell (``update``: the merged
    config of a best-combination row)."""
    cfg = training.merge_config(training.DEFAULTS, study['base'], 'base')
    cfg = training.merge_config(cfg, study['models'][model], f'models.{model}')
    cfg = training.merge_config(cfg, update if update is not None else row.get('config', {}),
                                f"rows.{row['name']}")
    cfg['name'] = cell_name(model, row['name'], seed)
    cfg['out_dir'] = study_dir(study)
    cfg['seed'] = int(seed)
    training.validate(cfg)
    return cfg


def cells(study: Dict[str, Any], best: bool = False) -> List[Tuple[str, Dict[str, Any], int]]:
    """``(model, row, seed)`` of every cell, plain rows (``best=False``) or
    best-combination rows (``best=True``); models in order, so the slowest
    model's cells start first."""
    return [(m, r, int(s)) for m in study['models'] for r in study['rows']
            if ('best_of' in r) == best and m in r.get('models', study['models'])
            for s in row_seeds(study, r)]


# --------------------------------------------------------------------------- #
# Reading run folders
# --------------------------------------------------------------------------- #

def read_metrics(run_dir: str) -> Optional[Dict[str, Any]]:
    """``metrics.json`` of a finished run, else ``None``."""
    try:
        with open(os.path.join(run_dir, 'metrics.json')) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if m.get('finished') else None


def cell_scores(m: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Train/val/test accuracy a finished run reports: one entry for a
    supervised run; for a contrastive run the linear probe on the pretrained
    encoder and on the same encoder at initialisation."""
    if m.get('probe') is not None:
        out = {'': m['probe']}
        if m.get('probe_random_encoder') is not None:
            out['random'] = m['probe_random_encoder']
        return {k: {'fit': v['train_acc'], 'train': v['train_acc'], 'val': v['val_acc'], 'test': v['test_acc'],
                    'wall': m['wall_time_s']} for k, v in out.items()}
    train = m.get('train_acc', float('nan'))
    return {'': {'fit': m.get('last_train_acc', train), 'train': train, 'val': m['best_val_acc'],
                 'test': m['test_acc'], 'wall': m['wall_time_s']}}


def choose_best(study: Dict[str, Any], model: str, row: Dict[str, Any],
                metrics: Dict[Tuple[str, str, int], Dict[str, Any]]) -> List[str]:
    """The rows a best-combination row merges for ``model``: per family the
    row of highest mean validation accuracy over seeds, if above the
    baseline's. Raises ``ValueError`` while a needed cell is unfinished."""
    rows = {r['name']: r for r in study['rows']}

    def mean_val(name: str) -> float:
        vals = []
        for s in row_seeds(study, rows[name]):
            m = metrics.get((model, name, int(s)))
            if m is None:
                raise ValueError(f"cell {cell_name(model, name, int(s))} is not finished; "
                                 f"row {row['name']!r} needs it")
            vals.append(cell_scores(m)['']['val'])
        return float(np.mean(vals))
    base = mean_val(row['baseline'])
    chosen = []
    for family in row['best_of']:
        scores = {n: mean_val(n) for n in family}
        top = max(family, key=lambda n: scores[n])
        if scores[top] > base:
            chosen.append(top)
    return chosen


def combined_config(study: Dict[str, Any], names: Sequence[str]) -> Dict[str, Any]:
    """The config update of rows ``names`` together: nested keys merged in
    order, ``transforms`` concatenated."""
    rows = {r['name']: r for r in study['rows']}
    out: Dict[str, Any] = {}
    transforms: List[Any] = []
    for n in names:
        cfg = copy.deepcopy(rows[n].get('config', {}))
        transforms += cfg.pop('transforms', [])
        out = _merge(out, cfg)
    if transforms:
        out['transforms'] = transforms
    return out


def collect(study: Dict[str, Any]) -> Dict[Tuple[str, str, int], Dict[str, Any]]:
    """Finished metrics of every cell, by ``(model, row, seed)``."""
    out = {}
    for model, row, seed in cells(study) + cells(study, best=True):
        m = read_metrics(os.path.join(study_dir(study), cell_name(model, row['name'], seed)))
        if m is not None:
            out[(model, row['name'], seed)] = m
    return out


# --------------------------------------------------------------------------- #
# Running the grid
# --------------------------------------------------------------------------- #

#: Config keys that say how a cell runs, not what it computes: a finished (or
#: checkpointed) cell stays valid when only these change. The one list that
#: --resume also goes by (nngraph.training.config).
EXECUTION_KEYS = training.EXECUTION_KEYS


def _same_config(run_dir: str, cfg: Dict[str, Any]) -> bool:
    """Whether the run in ``run_dir`` ran ``cfg``, up to :data:`EXECUTION_KEYS`.
    The saved config is read over today's defaults first, so a config key
    added since (at its default) does not make every finished cell stale."""
    try:
        with open(os.path.join(run_dir, 'config.yaml')) as f:
            saved = training.merge_config(training.DEFAULTS, yaml.safe_load(f))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return _experiment(saved) == _experiment(cfg)


def _experiment(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``cfg`` without its :data:`EXECUTION_KEYS`."""
    return training.config.without_execution_keys(cfg)


def _run_cell(cfg: Dict[str, Any], config_path: str, log_path: str, threads: int) -> Tuple[str, int]:
    run_dir = os.path.join(cfg['out_dir'], cfg['name'])
    flag = '--resume' if os.path.exists(os.path.join(run_dir, 'checkpoint.pt')) and \
        _same_config(run_dir, cfg) else '--overwrite'
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    with open(log_path, 'w') as log:
        rc = subprocess.call([sys.executable, TRAIN_PY, '--config', config_path, '--quiet', flag],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
    return cfg['name'], rc


def _launch(study: Dict[str, Any], todo: List[Dict[str, Any]], progress: bool) -> List[str]:
    """Runs the cells of ``todo`` (resolved configs), ``workers`` at a time;
    returns the names of those that failed."""
    root = study_dir(study)
    failed = []
    jobs = []
    for cfg in todo:
        config_path = os.path.join(root, 'configs', cfg['name'] + '.yaml')
        training.write_yaml(config_path, cfg)
        jobs.append((cfg, config_path, os.path.join(root, 'logs', cfg['name'] + '.log')))
    os.makedirs(os.path.join(root, 'logs'), exist_ok=True)
    with cf.ThreadPoolExecutor(max_workers=int(study['workers'])) as pool, \
            tqdm(total=len(jobs), desc='cells', disable=not progress) as bar:
        futures = [pool.submit(_run_cell, cfg, cp, lp, int(study['threads'])) for cfg, cp, lp in jobs]
        for fut in cf.as_completed(futures):
            name, rc = fut.result()
            if rc != 0:
                failed.append(name)
                tqdm.write(f'cell {name} failed (exit {rc}); see {os.path.join(root, "logs", name + ".log")}')
            bar.update(1)
    return failed


def _pending(study: Dict[str, Any], configs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The configs whose run folder holds no finished run of that same config."""
    return [c for c in configs if not (read_metrics(os.path.join(c['out_dir'], c['name'])) is not None
                                       and _same_config(os.path.join(c['out_dir'], c['name']), c))]


def build_dataset(study: Dict[str, Any], progress: bool = True) -> None:
    """Builds (or reuses) the study's INR dataset before any cell starts, so
    that parallel cells never race to build it."""
    from nngraph.data import build_inr_dataset
    build_inr_dataset(progress=progress, **study['dataset'])


def run_study(study: Dict[str, Any], progress: bool = True, command: Optional[str] = None) -> List[str]:
    """Builds the dataset, runs every unfinished cell (plain rows, then the
    best-combination rows), and writes the report (``command``: how the
    report says it was made); returns the failed cells."""
    if not os.path.exists(TRAIN_PY):
        raise FileNotFoundError(f'{TRAIN_PY} not found: run the study from a checkout of nngraph')
    t0 = time.perf_counter()
    build_dataset(study, progress)
    root = study_dir(study)
    plain = [cell_config(study, m, r, s) for m, r, s in cells(study)]
    todo = _pending(study, plain)
    if progress:
        print(f'{study["name"]}: {len(plain) - len(todo)} of {len(plain)} cells finished, running {len(todo)}')
    failed = _launch(study, todo, progress)

    metrics = collect(study)
    selection, best = {}, []
    for m, r, s in cells(study, best=True):
        try:
            names = selection.setdefault(m, {}).get(r['name']) or choose_best(study, m, r, metrics)
        except ValueError as err:
            failed.append(f"{cell_name(m, r['name'], s)} ({err})")
            continue
        selection[m][r['name']] = names
        best.append(cell_config(study, m, r, s, update=combined_config(study, names)))
    if selection:
        training.write_json(os.path.join(root, 'selection.json'), selection)
    todo = _pending(study, best)
    failed += _launch(study, todo, progress)
    _log_elapsed(root, time.perf_counter() - t0)
    write_report(study, command)
    return failed


def _log_elapsed(root: str, seconds: float) -> None:
    path = os.path.join(root, 'elapsed.json')
    try:
        with open(path) as f:
            sessions = json.load(f)
    except (OSError, ValueError):
        sessions = []
    sessions.append({'finished_at': datetime.datetime.now().isoformat(timespec='seconds'), 'seconds': seconds})
    training.write_json(path, sessions)


# --------------------------------------------------------------------------- #
# The report
# --------------------------------------------------------------------------- #

def _stat(xs: Sequence[float]) -> str:
    xs = [100 * x for x in xs if x == x]
    if not xs:
        return '—'
    if len(xs) == 1:
        return f'{xs[0]:.1f}'
    return f'{np.mean(xs):.1f} ± {np.std(xs, ddof=1):.1f}'


def table_rows(study: Dict[str, Any], metrics: Dict[Tuple[str, str, int], Dict[str, Any]]):
    """One entry per table line: ``(label, {model: {fit, train, test, gap, wall: [per seed]}})``."""
    lines = []
    for row in study['rows']:
        variants = ['']
        if any(cell_scores(m).get('random') for (mm, rr, s), m in metrics.items() if rr == row['name']):
            variants.append('random')
        for v in variants:
            label = row.get('label', row['name'])
            own = row_seeds(study, row)
            if own != [int(s) for s in study['seeds']]:
                label = f"{label} (seed{'s' if len(own) > 1 else ''} {', '.join(map(str, own))})"
            if v == 'random':
                label = f'{label}: same encoder untrained'
            per_model = {}
            for model in study['models']:
                seen = [cell_scores(metrics[(model, row['name'], int(s))]).get(v)
                        for s in row_seeds(study, row) if (model, row['name'], int(s)) in metrics]
                seen = [x for x in seen if x is not None]
                per_model[model] = {k: [x[k] for x in seen] for k in ('fit', 'train', 'test', 'wall')}
                per_model[model]['gap'] = [x['train'] - x['test'] for x in seen]
            lines.append((row['name'] + (':random' if v else ''), label, per_model))
    return lines


def _machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} cores, '
            f'Python {platform.python_version()}, torch {torch.__version__}')


def _build_summary(out: Optional[str]) -> str:
    """One line on the dataset build the cells read (from its manifest), or
    ``''`` where there is none."""
    from nngraph.data import store
    if not out:
        return ''
    try:
        manifest = store.read_manifest(os.path.expanduser(out))
    except (OSError, ValueError):
        return ''
    splits, st = manifest['splits'], manifest['settings']
    counts = ' / '.join(f"{splits[s]['num_inrs']:,} {s} INRs of {splits[s]['num_objects']:,} images"
                        for s in ('train', 'val', 'test') if s in splits)
    psnr = ', '.join(f"{s} {splits[s]['psnr_mean']:.1f}" for s in ('train', 'val', 'test')
                     if splits.get(s, {}).get('psnr_mean') is not None)
    return (f"Build: {counts}; `{manifest['convention']}`, {st.get('steps')} steps at lr {st.get('lr')}; "
            f'mean PSNR (dB) {psnr}.')


def render_markdown(study: Dict[str, Any], metrics, selection: Dict[str, Any], elapsed: float,
                    command: str) -> str:
    """The report table (and how it was made) as Markdown."""
    models = list(study['models'])
    n_cells = len(cells(study)) + len(cells(study, best=True))
    published = {r['name']: r['published'] for r in study['rows'] if r.get('published')}
    head = '| row | ' + ' | '.join(f'{m} fit | {m} train | {m} test | {m} gap | {m} time (s)' for m in models) + \
        (' | published test |' if published else ' |')
    sep = '|---|' + '---:|' * (5 * len(models)) + ('---|' if published else '')
    out = [f'# Study `{study["name"]}`', '',
           f'Generated by `{command}` from the run folders in `{study_dir(study)}/` '
           f'({len(metrics)} of {n_cells} cells finished; seeds {list(study["seeds"])}).',
           'Accuracy in %, mean ± std over seeds. fit = the last epoch\'s model on the unaugmented training '
           'graphs (does the model fit what it trains on?); train = the selected model (best validation epoch) '
           'on the same graphs (a probe\'s on the frozen embeddings: both); gap = train − test; time = one '
           'cell\'s wall time.']
    if study['dataset']:
        args = ', '.join(f'{k}={v!r}' for k, v in study['dataset'].items())
        out.append(f'Dataset: `nngraph.data.build_inr_dataset({args})`.')
        built = _build_summary(study['dataset'].get('out'))
        if built:
            out.append(built)
    out += ['', head, sep]
    for key, label, per_model in table_rows(study, metrics):
        cols = []
        for m in models:
            d = per_model[m]
            wall = f'{np.mean(d["wall"]):.0f}' if d['wall'] else '—'
            cols += [_stat(d['fit']), _stat(d['train']), _stat(d['test']), _stat(d['gap']), wall]
        if published:
            cols.append(str(published.get(key, '')))
        out.append(f'| {label} | ' + ' | '.join(cols) + ' |')
    out.append('')
    for m, rows in selection.items():
        for r, names in rows.items():
            out.append(f'Row `{r}` for `{m}` combines: {", ".join(names) if names else "nothing (no family beat the baseline)"} '
                       f'(chosen on validation accuracy).')
    total = sum(mm['wall_time_s'] for mm in metrics.values())
    grid = (f'; the grid took {elapsed / 60:.1f} min of wall time with {study["workers"]} worker(s) × '
            f'{study["threads"]} thread(s)') if elapsed > 0 else ''
    out += ['', f'Compute: {total / 60:.1f} min summed over cells{grid}.', f'Machine: {_machine()}.', '']
    if study['notes']:
        out += [study['notes'].strip(), '']
    return '\n'.join(out)


def _leading_number(text: Any) -> Optional[float]:
    """The figure a ``published`` entry starts with (``'47.79 ± 1.03'`` -> 47.79)."""
    try:
        return float(str(text).split()[0]) if text is not None else None
    except (ValueError, IndexError):
        return None


def plot_report(path: str, study: Dict[str, Any], metrics) -> None:
    """Bars (test accuracy, mean ± std; train accuracy as a dot; a published
    figure as a cross) per row and model, and train vs test accuracy per
    epoch for the ``curves`` rows."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    models = list(study['models'])
    lines = table_rows(study, metrics)
    fig = plt.figure(figsize=(15, max(6, 0.38 * len(lines) + 2)))
    grid = fig.add_gridspec(len(models), 2, width_ratios=[1.3, 1])
    ax = fig.add_subplot(grid[:, 0])
    y = np.arange(len(lines))
    h = 0.8 / len(models)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, m in enumerate(models):
        test = [100 * np.mean(d[m]['test']) if d[m]['test'] else np.nan for _, _, d in lines]
        err = [100 * np.std(d[m]['test'], ddof=1) if len(d[m]['test']) > 1 else 0 for _, _, d in lines]
        train = [100 * np.mean(d[m]['train']) if d[m]['train'] else np.nan for _, _, d in lines]
        pos = y - 0.4 + h * (i + 0.5)
        ax.barh(pos, test, h, xerr=err, color=colors[i], alpha=0.85, label=f'{m}: test', capsize=2)
        ax.plot(train, pos, 'o', color=colors[i], markeredgecolor='k', markersize=4, label=f'{m}: train')
    rows = {r['name']: r for r in study['rows']}
    published = [_leading_number(rows.get(key, {}).get('published')) for key, _, _ in lines]
    if any(v is not None for v in published):
        ax.plot([np.nan if v is None else v for v in published], y, 'kx', markersize=8, mew=2,
                label='published test')
    ax.set_yticks(y, [label for _, label, _ in lines], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('accuracy (%)')
    ax.set_title('test accuracy (bars, mean ± std over seeds) and train accuracy (dots)')
    ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.08), ncol=2 * len(models) + 1)
    ax.grid(axis='x', alpha=0.3)
    for i, m in enumerate(models):
        cax = fig.add_subplot(grid[i, 1])
        for j, name in enumerate(study['curves']):
            hist = [metrics[(m, name, s)]['epochs'] for s in row_seeds(study, rows[name]) if (m, name, s) in metrics]
            hist = [h for h in hist if h and 'val_acc' in h[0]]
            if not hist:
                continue
            n = min(len(h) for h in hist)
            ep = np.arange(1, n + 1)
            held = 'test' if all('test_acc' in h[0] for h in hist) else 'val'   # test only at the end: val
            tr = 100 * np.mean([[e['train_acc'] for e in h[:n]] for h in hist], axis=0)
            te = 100 * np.mean([[e[f'{held}_acc'] for e in h[:n]] for h in hist], axis=0)
            c = colors[j % len(colors)]
            cax.plot(ep, tr, '-', color=c, label=f'{name}: train')
            cax.plot(ep, te, '--', color=c, label=f'{name}: {held}')
        cax.set_title(f'{m}: train (augmented batches, solid) vs held-out (dashed)', fontsize=9)
        cax.set_xlabel('epoch')
        cax.set_ylabel('accuracy (%)')
        cax.grid(alpha=0.3)
        if cax.lines:
            cax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)


def write_report(study: Dict[str, Any], command: Optional[str] = None) -> Tuple[str, str]:
    """Writes ``<results>.md`` and ``<results>.png`` from the run folders
    (atomically); returns their paths."""
    root = study_dir(study)
    metrics = collect(study)
    try:
        with open(os.path.join(root, 'selection.json')) as f:
            selection = json.load(f)
    except (OSError, ValueError):
        selection = {}
    try:
        with open(os.path.join(root, 'elapsed.json')) as f:
            elapsed = sum(s['seconds'] for s in json.load(f))
    except (OSError, ValueError):
        elapsed = 0.0
    command = command or f'python -m nngraph.study <{study["name"]}.yaml>'
    md = render_markdown(study, metrics, selection, elapsed, command)
    md_path, png_path = study['results'] + '.md', study['results'] + '.png'
    os.makedirs(os.path.dirname(md_path) or '.', exist_ok=True)
    with atomic_path(md_path) as tmp:
        with open(tmp, 'w') as f:
            f.write(md)
    plot_report(png_path, study, metrics)
    return md_path, png_path


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m nngraph.study', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='study YAML, e.g. configs/study-digits.yaml')
    parser.add_argument('--quick', action='store_true', help='the tiny grid of the YAML\'s quick section')
    parser.add_argument('--report', action='store_true', help='only regenerate the report from the run folders')
    parser.add_argument('--workers', type=int, help='cells at once (default: the YAML\'s workers)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    try:
        study = load_study(args.config, quick=args.quick)
    except (ValueError, OSError) as err:
        print(f'study config error: {err}', file=sys.stderr)
        return 2
    command = f"python -m nngraph.study {args.config}{' --quick' if args.quick else ''}"
    if args.workers:
        study['workers'] = args.workers
    if args.report:
        paths = write_report(study, command)
        print('wrote ' + ', '.join(paths))
        return 0
    failed = run_study(study, progress=not args.quiet, command=command)
    print(f"wrote {study['results']}.md, {study['results']}.png")
    if failed:
        print('failed cells:\n  ' + '\n  '.join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
