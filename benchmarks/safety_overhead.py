"""What the integrity checks cost on the hot paths: this tree against an
older revision, in one run.

The checks of issue 19 (non-finite refusals in every model's forward and
every transform, sizes and finiteness of MixUp partners, byte-exact cache
keys of the aligned MLP, a checksum on every training checkpoint, a finite
check of every fitted INR) sit on paths that run millions of times. This
script times those paths with the package of this tree and with the package
at ``--old-rev`` (checked out into a temporary git worktree), alternating
the two in fresh processes, and prints the median time per figure and the
ratio new/old. A ratio within the spread of the repeats means the checks
cost nothing measurable.

Figures (2-32-32-1 SIRENs, ``sine:30.0``; one thread):

* ``gnn_fwd_bwd``: forward+backward of the GNN classifier on a batch of 64;
* ``gnn_eval``: forward of the same under ``no_grad`` on a batch of 256;
* ``flat_fwd``, ``statnn_fwd``: the baselines' forward on a batch of 256;
* ``aligned_fwd_cached``: the aligned MLP on a batch of 256 it has seen
  (every network a cache hit: what each epoch after the first costs);
* ``transforms_per_sample``: sign flip, permutation, noise and dropout on one
  ``Data`` at a time (a DataLoader worker's path), 256 graphs;
* ``mixup_per_sample``: vanilla weight MixUp on one ``Data`` at a time;
* ``fit_chunk``: fitting 64 INRs to 8x8 images for 50 steps;
* ``checkpoint_save_load``: writing and reading a training checkpoint of the
  GNN classifier with its Adam state (the run folder's format of each tree).

    PYTHONPATH=. python benchmarks/safety_overhead.py --old-rev ae66549 [--repeats 5] [--only mixup_per_sample,...]

Last line: one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = (2, 32, 32, 1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _best_of(fn, seconds: float = 0.5) -> float:
    """Median seconds per call of ``fn`` over about ``seconds`` (after a warm-up call)."""
    fn()
    times = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(only=None) -> dict:
    """Every figure (or those named in ``only``), with whichever ``nngraph`` is
    first on ``sys.path``."""
    import torch
    import torch_geometric.transforms as PyGT
    from torch_geometric.data import Batch

    import nngraph
    import nngraph.transforms as T
    from nngraph.inr import fit, grid
    from nngraph.models import AlignedMLPEncoder, FlatMLPClassifier, GraphClassifier, StatNNEncoder

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)

    def nets(n: int):
        W = [torch.randn(n, b, a, generator=gen) / a ** 0.5 for a, b in zip(SIZES[:-1], SIZES[1:])]
        b = [torch.randn(n, d, generator=gen) * 0.1 for d in SIZES[1:]]
        out = []
        for i in range(n):
            g = nngraph.from_weights([w[i] for w in W], [v[i] for v in b], 'sine:30.0')
            g.y = torch.tensor([i % 10])
            out.append(g)
        return out

    graphs = nets(256)
    big, small = Batch.from_data_list(graphs), Batch.from_data_list(graphs[:64])
    gnn = GraphClassifier(10, in_features=2, out_features=1, hidden=64, layers=3)

    def gnn_fwd_bwd():
        gnn.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(gnn(small), small.y).backward()

    def gnn_eval():
        with torch.no_grad():
            gnn(big)

    flat, stat = FlatMLPClassifier(10, SIZES), StatNNEncoder(len(SIZES) - 1)
    aligned = AlignedMLPEncoder(SIZES, signs=True)
    aligned.fit_normalization(big)

    def aligned_fwd_cached():          # the first call fills the cache (in _best_of's warm-up)
        with torch.no_grad():
            aligned(big)

    pipeline = PyGT.Compose([T.RandomSignFlip(0.5), T.RandomNeuronPermutation(), T.WeightNoise(0.01),
                             T.WeightDropout(0.05)])
    mix = T.WeightMixUp(graphs, mode='vanilla', alpha=0.2)
    images = torch.rand(64, 64, 1, generator=gen)            # 64 8x8 images, one channel

    def checkpoint_save_load():
        # the run folder's format of each tree: weights-only and checksummed where it exists
        rd.save_checkpoint(path, epoch=1, model=gnn.state_dict(), optimizer=optim.state_dict())
        if hasattr(rd, 'load_checkpoint'):
            rd.load_checkpoint(path)
        else:
            torch.load(path, weights_only=False)

    from nngraph.training import run_dir as rd
    optim = torch.optim.Adam(gnn.parameters())
    gnn_fwd_bwd()
    optim.step()
    figures = {
        'gnn_fwd_bwd': gnn_fwd_bwd,
        'gnn_eval': gnn_eval,
        'flat_fwd': lambda: flat(big),
        'statnn_fwd': lambda: stat(big),
        'aligned_fwd_cached': aligned_fwd_cached,
        'transforms_per_sample': lambda: [pipeline(g) for g in graphs],
        'mixup_per_sample': lambda: [mix(g) for g in graphs],
        'fit_chunk': lambda: fit(images, grid(8), steps=50, progress=False),
        'checkpoint_save_load': checkpoint_save_load,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'checkpoint.pt')
        return {key: _best_of(fn) for key, fn in figures.items() if only is None or key in only}


def _worktree(rev: str) -> str:
    path = tempfile.mkdtemp(prefix='nngraph-old-')
    subprocess.run(['git', '-C', ROOT, 'worktree', 'add', '--detach', path, rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def _child(tree: str, only) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    extra = ['--only', ','.join(only)] if only else []
    res = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', *extra], env=env, cwd=tree,
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--old-rev', required='--child' not in sys.argv, help='the revision to compare against')
    p.add_argument('--repeats', type=int, default=5, help='alternating runs of each tree (median counts)')
    p.add_argument('--only', default=None, help='comma-separated figures to time (default: all)')
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args()
    only = args.only.split(',') if args.only else None
    if args.child:
        print(json.dumps(measure(only)))
        return
    old = _worktree(args.old_rev)
    try:
        runs = {'old': [], 'new': []}
        for _ in range(args.repeats):
            runs['old'].append(_child(old, only))
            runs['new'].append(_child(ROOT, only))
    finally:
        subprocess.run(['git', '-C', ROOT, 'worktree', 'remove', '--force', old], check=False)
    figures = {}
    print(f"{'figure':24s} {'old ms':>9s} {'new ms':>9s} {'new/old':>8s}  (min-max of the per-run ratios)")
    for key in runs['old'][0]:
        o = statistics.median(r[key] for r in runs['old'])
        n = statistics.median(r[key] for r in runs['new'])
        ratios = [b[key] / a[key] for a, b in zip(runs['old'], runs['new'])]
        figures[key] = dict(old_ms=round(o * 1e3, 3), new_ms=round(n * 1e3, 3), ratio=round(n / o, 3),
                            ratio_min=round(min(ratios), 3), ratio_max=round(max(ratios), 3))
        print(f'{key:24s} {o * 1e3:9.3f} {n * 1e3:9.3f} {n / o:8.3f}  ({min(ratios):.3f}-{max(ratios):.3f})')
    print(json.dumps(dict(old_rev=args.old_rev, repeats=args.repeats, figures=figures)))


if __name__ == '__main__':
    main()
