"""Throughput of the MLP baselines of train.py on digits-INR graphs, side by side.

For each model (flat, statnn, aligned_mlp without and with sign matching):
graphs/s of a training step (forward, backward, AdamW) and of the forward
alone, on batches of real training graphs, next to the rate at which PyG
collates those batches (what a DataLoader must do for every model). Repeats
are interleaved and the median is reported, so that a busy machine slows
every model alike.

    PYTHONPATH=. python benchmarks/baselines.py [--root data/digits] [--threads 2] [--batch 128]

Last line: one JSON object with all figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch_geometric.data import Batch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nngraph import training as T  # noqa: E402
from nngraph.data import INRGraphDataset  # noqa: E402

MODELS = {'flat': ['model.name=flat'], 'statnn': ['model.name=statnn'],
          'aligned_mlp': ['model.name=aligned_mlp'],
          'aligned_mlp+signs': ['model.name=aligned_mlp', 'model.align_signs=true']}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default='data/digits')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--batches', type=int, default=8)
    p.add_argument('--repeats', type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train = INRGraphDataset(args.root, 'train', views=4)
    graphs = [train[i] for i in range(args.batch * args.batches)]
    t0 = time.perf_counter()
    batches = [Batch.from_data_list(graphs[i * args.batch:(i + 1) * args.batch]) for i in range(args.batches)]
    collate = len(graphs) / (time.perf_counter() - t0)
    K, sizes = int(train.num_classes), tuple(train.layer_sizes)

    models = {}
    for name, over in MODELS.items():
        cfg = T.load_config(None, over)
        torch.manual_seed(0)
        model = T.build_model(cfg, K, sizes)
        T.fit_normalization(model, train)
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def step(model, opt, b):
        loss = T.soft_cross_entropy(model(b), b.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {name: {'train': [], 'forward': []} for name in models}
    for _ in range(args.repeats):
        for name, (model, opt) in models.items():
            model.train()
            t0 = time.perf_counter()
            for b in batches:
                step(model, opt, b)
            times[name]['train'].append(time.perf_counter() - t0)
            model.eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                for b in batches:
                    model(b)
            times[name]['forward'].append(time.perf_counter() - t0)

    n = len(graphs)
    result = {'threads': args.threads, 'batch': args.batch, 'layer_sizes': sizes,
              'collate_graphs_per_s': round(collate)}
    print(f'{len(graphs)} digits-INR graphs {sizes}, batch {args.batch}, {args.threads} threads; '
          f'collating them: {collate:.0f} graphs/s')
    print(f"{'model':<18} {'train step':>12} {'forward':>12}   graphs/s (median of {args.repeats})")
    for name, t in times.items():
        tr, fw = n / statistics.median(t['train']), n / statistics.median(t['forward'])
        result[name] = {'train_graphs_per_s': round(tr), 'forward_graphs_per_s': round(fw)}
        print(f'{name:<18} {tr:>12.0f} {fw:>12.0f}')
    print(json.dumps(result))


if __name__ == '__main__':
    main()
