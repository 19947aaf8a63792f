"""Throughput of the weight-space augmentations, on one CPU core.

For every transform in :mod:`nngraph.transforms`: graphs/s of the per-sample
path (what a DataLoader worker does: one ``Data`` at a time) and of the
vectorised batch path (one ``Batch`` of 256 graphs of one architecture, one
tensor op per layer), and the batch path's speed-up over per-sample, all
measured in this one run. Networks are 2-32-32-1 SIRENs (``sine:30.0``), or
relu MLPs of the same shape where the transform needs a homogeneous
activation. Collation is not timed: a DataLoader collates either way.

Aligned-pair figures (weight matching, MixUp) come from
``benchmarks/_alignment.py`` when it is present (its ``run() -> dict``) and
are printed and reported alongside.

Run:  PYTHONPATH=. python benchmarks/augmentations.py [--batch 256] [--repeats 5]
Last line: one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
import torch_geometric
import torch_geometric.transforms as PyGT
from torch_geometric.data import Batch

import nngraph.transforms as T
from nngraph.graph import from_weights

SIZES = (2, 32, 32, 1)


def make_nets(n: int, activation: str):
    """``n`` random networks of shape ``SIZES`` (SIREN init for sine)."""
    w0 = 30.0
    graphs = []
    for _ in range(n):
        weights, biases = [], []
        for l in range(len(SIZES) - 1):
            d = SIZES[l]
            bound = (1 / d if l == 0 else math.sqrt(6 / d) / w0) if activation.startswith('sine') \
                else math.sqrt(6 / d)
            weights.append(torch.empty(SIZES[l + 1], d).uniform_(-bound, bound))
            biases.append(torch.empty(SIZES[l + 1]).uniform_(-bound, bound))
        graphs.append(from_weights(weights, biases, activation, y=torch.tensor([0])))
    return graphs


def cases():
    """(name, transform, activation) for every transform and a typical pipeline."""
    return [
        ('RandomNeuronPermutation', T.RandomNeuronPermutation(), 'sine:30.0'),
        ('RandomSignFlip', T.RandomSignFlip(0.5), 'sine:30.0'),
        ('SirenBiasShift', T.SirenBiasShift(2), 'sine:30.0'),
        ('RandomPositiveScaling', T.RandomPositiveScaling(0.5, 2.0), 'relu'),
        ('InputRotation', T.InputRotation(45), 'sine:30.0'),
        ('InputTranslation', T.InputTranslation(0.25), 'sine:30.0'),
        ('InputScaling', T.InputScaling(0.8, 1.25), 'sine:30.0'),
        ('WeightNoise', T.WeightNoise(0.05), 'sine:30.0'),
        ('WeightDropout', T.WeightDropout(0.1), 'sine:30.0'),
        ('QuantileZeroing', T.QuantileZeroing(0.3), 'sine:30.0'),
        ('LabelSmoothing', T.LabelSmoothing(0.1, 10), 'sine:30.0'),
        ('Compose(perm,flip,shift,rot,noise)',
         PyGT.Compose([T.RandomNeuronPermutation(), T.RandomSignFlip(), T.SirenBiasShift(1),
                       T.InputRotation(45), T.WeightNoise(0.01)]), 'sine:30.0'),
    ]


def best_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alignment_figures():
    """Part B's aligned-pairs figures, if ``benchmarks/_alignment.py`` exists."""
    try:
        import _alignment
    except ModuleNotFoundError as err:
        if err.name != '_alignment':
            raise
        return None
    return _alignment.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=256, help='graphs per batch (and per-sample loop)')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per figure (median)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    nets = {act: make_nets(args.batch, act) for act in ('sine:30.0', 'relu')}
    batches = {act: Batch.from_data_list(g) for act, g in nets.items()}

    per_sample, batched, speedup = {}, {}, {}
    print(f'nngraph augmentations: {args.batch} graphs of {"-".join(map(str, SIZES))}, '
          f'1 thread, torch {torch.__version__}, PyG {torch_geometric.__version__}')
    print(f'{"transform":38s} {"per-sample g/s":>15s} {"batch g/s":>13s} {"speed-up":>9s}')
    for name, transform, act in cases():
        graphs, batch = nets[act], batches[act]
        t_single = best_time(lambda: [transform(g) for g in graphs], args.repeats)
        t_batch = best_time(lambda: transform(batch), args.repeats)
        per_sample[name] = args.batch / t_single
        batched[name] = args.batch / t_batch
        speedup[name] = t_single / t_batch
        print(f'{name:38s} {per_sample[name]:15,.0f} {batched[name]:13,.0f} {speedup[name]:8.1f}x')
    worst = min(speedup, key=speedup.get)
    print(f'smallest batch speed-up: {speedup[worst]:.1f}x ({worst}); target >= 10x')

    alignment = alignment_figures()
    if alignment is None:
        print('aligned pairs: benchmarks/_alignment.py not present, skipped')
    else:
        print('aligned pairs (benchmarks/_alignment.py):')
        for key, value in alignment.items():
            print(f'  {key}: {value}')

    print(json.dumps({
        'benchmark': 'augmentations', 'architecture': list(SIZES), 'batch': args.batch,
        'threads': torch.get_num_threads(), 'torch': torch.__version__,
        'per_sample_graphs_per_s': {k: round(v, 1) for k, v in per_sample.items()},
        'batch_graphs_per_s': {k: round(v, 1) for k, v in batched.items()},
        'batch_speedup': {k: round(v, 2) for k, v in speedup.items()},
        'min_batch_speedup': round(speedup[worst], 2),
        'alignment': alignment,
    }))


if __name__ == '__main__':
    main()
