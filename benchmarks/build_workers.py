"""Building with ``--workers N`` against ``--workers 1``: the speed-up of one build, in one run.

Builds the digits INR dataset from the first ``--limit`` images (default
200: about 620 INRs at the default 4 views; the default fitting settings,
16x16, 300 Adam steps) into a fresh folder, with ``workers=1`` (this process,
one thread) and ``workers=N`` (``N`` spawned processes, one thread each),
``--repeats`` times alternating, and prints the wall-clock seconds of each
(the best of the repeats counts), INRs/s and the ratio
``t(workers=1) / t(workers=N)``. Chunks of ``--chunk-size`` (default 32,
not the builds' 128) so that the workers get equal shares of a small slice.
The two builds are compared record by record (they must be equal bit for
bit), and the figures say how many INRs and chunks each build fitted.

The workers' time includes starting them: a fresh interpreter that imports
torch and nngraph, what the command costs. ``startup_s`` measures that alone
(``N`` spawned processes doing nothing), so a reader can tell the fixed cost
from the fitting on a slice this small; ``loadavg`` is the machine's load
before and after. On a machine whose cores are busy with other work the
ratio is lower than on an idle one (a 2-core machine running another job has
less than one free core for a second worker): read it with the load.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/build_workers.py [--limit 200] [--workers 2] [--repeats 2]

Last line: one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nngraph.data import build_inr_dataset, store  # noqa: E402
from nngraph.data import workspace as W  # noqa: E402


def _nothing(job) -> None:
    """A worker's job that does nothing: what starting the workers costs."""


def _same(a: str, b: str) -> bool:
    """Whether two builds hold the same records, tensors bit for bit."""
    for s in store.SPLITS:
        x, y = (torch.load(os.path.join(r, f'{s}.pt'), weights_only=True) for r in (a, b))
        for key in x:
            u, v = x[key], y[key]
            pairs = zip(u, v) if isinstance(u, list) and u and isinstance(u[0], torch.Tensor) else [(u, v)]
            for p, q in pairs:
                if isinstance(p, torch.Tensor):
                    if p.dtype != q.dtype or p.shape != q.shape or \
                            p.contiguous().numpy().tobytes() != q.contiguous().numpy().tobytes():
                        return False
                elif p != q:
                    return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--limit', type=int, default=200, help='digits images built')
    p.add_argument('--workers', type=int, default=2, help='processes of the parallel build')
    p.add_argument('--chunk-size', type=int, default=32, help='INRs fitted as one batch')
    p.add_argument('--steps', type=int, default=None, help='Adam steps (default: the build default)')
    p.add_argument('--repeats', type=int, default=2, help='alternating builds per setting; the best counts')
    args = p.parse_args()
    settings = dict(limit=args.limit, chunk_size=args.chunk_size, progress=False, threads=1)
    if args.steps is not None:
        settings['steps'] = args.steps
    load_before = os.getloadavg()

    t = time.perf_counter()
    W.in_workers(_nothing, list(range(args.workers)), [f'worker {k}' for k in range(args.workers)])
    startup = time.perf_counter() - t

    times = {1: [], args.workers: []}
    tmp = tempfile.mkdtemp(prefix='build-workers-')
    try:
        kept = {}
        for r in range(args.repeats):
            for w in (1, args.workers) if r % 2 == 0 else (args.workers, 1):
                out = os.path.join(tmp, f'w{w}-r{r}')
                t = time.perf_counter()
                build_inr_dataset('digits', out=out, workers=w, **settings)
                times[w].append(time.perf_counter() - t)
                print(f'workers={w} repeat {r}: {times[w][-1]:.1f} s', flush=True)
                kept.setdefault(w, out)
        manifest = store.read_manifest(kept[1])
        inrs = sum(e['num_inrs'] for e in manifest['splits'].values())
        equal = _same(kept[1], kept[args.workers])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    one, many = min(times[1]), min(times[args.workers])
    figures = dict(limit=args.limit, inrs=inrs, chunks=-(-inrs // args.chunk_size), chunk_size=args.chunk_size,
                   steps=manifest['settings']['steps'], workers=args.workers,
                   seconds_workers_1=round(one, 2), seconds_workers_n=round(many, 2),
                   inrs_per_s_workers_1=round(inrs / one, 1), inrs_per_s_workers_n=round(inrs / many, 1),
                   speedup=round(one / many, 3), startup_s=round(startup, 2), builds_equal=equal,
                   all_seconds={str(k): [round(v, 2) for v in vs] for k, vs in times.items()},
                   cpus=os.cpu_count(), loadavg=[round(v, 2) for v in (*load_before, *os.getloadavg())])
    print(f'{inrs} INRs: workers=1 {one:.1f} s, workers={args.workers} {many:.1f} s '
          f'(starting the workers alone {startup:.1f} s): speed-up {one / many:.2f}x; '
          f'builds equal: {equal}; load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f} '
          f'on {os.cpu_count()} CPUs')
    print(json.dumps(figures))


if __name__ == '__main__':
    main()
