"""The tables and the scatter plot of ``results/zoo.md`` from finished runs.

::

    python -m nngraph.zoo.report runs/zoo --plot results/zoo-scatter.png

Reads ``RUNS/<config>-s<seed>/metrics.json`` (and the first seed's
``predictions.csv`` for the plot) of the configs of :data:`ROWS`, and prints
one markdown row per config: test Kendall tau, R^2 and MAE (mean +- std over
the seeds found), validation tau, and the mean wall time of a run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from nngraph._atomic import atomic_path

__all__ = ['ROWS', 'collect', 'table', 'scatter']

#: ``(config stem, subset, model)`` in table order.
ROWS: Tuple[Tuple[str, str, str], ...] = (
    ('zoo-gnn', 'whole zoo (36 architectures)', 'GNN'),
    ('zoo-statnn', 'whole zoo (36 architectures)', 'StatNN'),
    ('zoo-arch-gnn', '64-8-8-8-10, 4 activations', 'GNN'),
    ('zoo-arch-statnn', '64-8-8-8-10, 4 activations', 'StatNN'),
    ('zoo-arch-flat', '64-8-8-8-10, 4 activations', 'flat MLP'),
    ('zoo-arch-flat-perm', '64-8-8-8-10, 4 activations', 'flat MLP + RandomNeuronPermutation'),
    ('zoo-relu-gnn', 'relu networks (9 shapes)', 'GNN'),
    ('zoo-relu-gnn-scaling', 'relu networks (9 shapes)', 'GNN + RandomPositiveScaling(0.5, 2)'),
)


def collect(runs: str, stem: str, seeds: Sequence[int] = (0, 1, 2)) -> List[Dict]:
    """The finished ``metrics.json`` of ``runs/<stem>-s<seed>`` for each seed found."""
    out = []
    for s in seeds:
        path = os.path.join(runs, f'{stem}-s{s}', 'metrics.json')
        if os.path.exists(path):
            with open(path) as f:
                m = json.load(f)
            if m.get('finished'):
                out.append(m)
    return out


def _pm(values: List[float], digits: int = 3) -> str:
    if not values:
        return 'n/a'
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f'{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}'


def table(runs: str) -> str:
    """The markdown table of every row of :data:`ROWS` with finished runs."""
    lines = ['| subset (test split: held-out runs) | model | seeds | test tau | test R^2 | test MAE | '
             'test tau, trained checkpoints only | val tau | wall time / run |',
             '|---|---|---|---|---|---|---|---|---|']
    for stem, subset, model in ROWS:
        ms = collect(runs, stem)
        if not ms:
            continue
        col = lambda k: [m[k] for m in ms]
        lines.append(f'| {subset} | {model} | {len(ms)} | {_pm(col("test_tau"))} | {_pm(col("test_r2"))} | '
                     f'{_pm(col("test_mae"))} | {_pm(_trained_tau(runs, stem, ms))} | {_pm(col("best_val_tau"))} | '
                     f'{statistics.mean(col("wall_time_s")):.0f} s |')
    return '\n'.join(lines)


def _trained_tau(runs: str, stem: str, ms: List[Dict]) -> List[float]:
    # Epoch-0 checkpoints (untrained, near chance) are easy to rank apart from
    # trained ones; tau over epochs >= 1 only is the harder question.
    from scipy.stats import kendalltau
    out = []
    for m in ms:
        y, p, e = _predictions(os.path.join(runs, m['name'], 'predictions.csv'))
        keep = [i for i, v in enumerate(e) if v >= 1]
        out.append(float(kendalltau([p[i] for i in keep], [y[i] for i in keep]).statistic))
    return out


def _predictions(path: str) -> Tuple[List[float], List[float], List[int]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [float(r['y']) for r in rows], [float(r['pred']) for r in rows], [int(r['epoch']) for r in rows]


def scatter(runs: str, out: str, stems: Sequence[str] = ('zoo-gnn', 'zoo-statnn'), seed: int = 0) -> None:
    """Predicted vs true test accuracy on the test split, one panel per
    config (its ``seed`` run), coloured by checkpoint epoch; written atomically."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(stems), figsize=(5 * len(stems), 4.6), squeeze=False)
    for ax, stem in zip(axes[0], stems):
        run = os.path.join(runs, f'{stem}-s{seed}')
        y, p, e = _predictions(os.path.join(run, 'predictions.csv'))
        with open(os.path.join(run, 'metrics.json')) as f:
            m = json.load(f)
        sc = ax.scatter(y, p, c=[max(v, 0.5) for v in e], s=5, alpha=0.6, cmap='viridis',
                        norm=matplotlib.colors.LogNorm())
        ax.plot([0, 1], [0, 1], 'k--', lw=0.8)
        ax.set_xlabel('true test accuracy')
        ax.set_ylabel('predicted test accuracy')
        ax.set_title(f"{stem} (seed {seed}): tau {m['test_tau']:.3f}, R$^2$ {m['test_r2']:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.1, 1.05)
        ax.grid(alpha=0.3)
    fig.colorbar(sc, ax=axes[0].tolist(), label='checkpoint epoch (0 shown at 0.5)')
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    """Prints the table; writes the scatter plot with ``--plot``."""
    parser = argparse.ArgumentParser(prog='python -m nngraph.zoo.report', description=__doc__.split('\n')[0])
    parser.add_argument('runs', help='folder of the runs (out_dir of the zoo configs)')
    parser.add_argument('--plot', default=None, help='write the scatter plot here (png)')
    args = parser.parse_args(argv)
    print(table(args.runs))
    if args.plot:
        scatter(args.runs, args.plot)
    return 0


if __name__ == '__main__':
    sys.exit(main())
