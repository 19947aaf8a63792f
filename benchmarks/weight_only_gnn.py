"""Why the weight-only GNN could not learn, and which design choices fix it.

Two parts, both on an FMNIST-INR build (``python -m nngraph.data build
fashion-mnist``) or any other INR dataset folder:

``diagnose``: at initialisation, for the encoder as configured: how much the
embeddings of different INRs differ (spread across graphs relative to their
norm), the gradient norm of every parameter group after one batch, and the
per-layer scale of the inputs before and after the encoder's standardisation.

``train``: short training runs of encoder variants on a class-balanced subset
of the training split, printing validation accuracy per epoch (and the final
training accuracy), so an option's effect is read on the same data and budget.

    python benchmarks/weight_only_gnn.py diagnose
    python benchmarks/weight_only_gnn.py train --per-class 500 --epochs 10 \\
        --variant base --variant signs=bias --variant 'signs=bias;aggr=sum' \\
        --out results/weight-only-gnn-ablation.json

With ``--out``, each finished variant is added to that JSON file (written
atomically; a variant already there with the same settings is skipped, so an
interrupted sweep resumes) and a markdown table is written beside it.

A variant is ``base`` (the default encoder) or ``;``-separated ``key=value``
encoder overrides (``signs`` is ``canonical_signs``), e.g.
``"signs=out;aggr=mean,max"``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from nngraph._atomic import atomic_path  # noqa: E402
from nngraph.training.run_dir import write_json  # noqa: E402
from nngraph.data import INRGraphDataset  # noqa: E402
from nngraph.models import GraphClassifier  # noqa: E402

BASE = dict(hidden=64, edge_hidden=32, layers=3, out_dim=64, aggr='mean', probe_points=0)
ALIASES = {'signs': 'canonical_signs', 'probes': 'probe_points', 'ff': 'fourier_features'}


def parse_variant(text: str) -> dict:
    kwargs = dict(BASE)
    if text == 'base':
        return kwargs
    for item in text.split(';'):
        key, value = item.split('=')
        key = ALIASES.get(key, key)
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        kwargs[key] = value
    return kwargs


def stacked(dataset, index):
    return Batch.from_data_list([dataset[int(i)] for i in index])


def subset(dataset, per_class, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = dataset.y
    keep = [torch.nonzero(y == c).flatten() for c in range(int(y.max()) + 1)]
    keep = [k[torch.randperm(len(k), generator=gen)[:per_class]] for k in keep]
    return torch.cat(keep)


def diagnose(args) -> None:
    train = INRGraphDataset(args.root, 'train')
    torch.manual_seed(0)
    index = subset(train, 26)[:256]
    batch = stacked(train, index)
    sizes = train.layer_sizes
    for name in args.variant or ['base']:
        kwargs = parse_variant(name)
        model = GraphClassifier(int(train.num_classes), in_features=sizes[0], out_features=sizes[-1], **kwargs)
        model.encoder.fit_normalization(batch)
        model.eval()
        with torch.no_grad():
            z = model.encoder(batch)
        spread = (z - z.mean(0)).norm(dim=1).mean() / z.norm(dim=1).mean()
        model.train()
        loss = F.cross_entropy(model(batch), batch.y.view(-1))
        loss.backward()
        print(f'--- {name}: embedding spread across graphs / norm = {spread:.4f}')
        groups = {}
        for pname, p in model.named_parameters():
            if p.grad is None:
                continue
            key = '.'.join(pname.split('.')[:3])
            groups[key] = groups.get(key, 0.0) + float(p.grad.pow(2).sum())
        for key, sq in groups.items():
            print(f'    grad norm {key:32s} {math.sqrt(sq):.3e}')
    enc = model.encoder
    if enc.canonical is not None:           # the statistics of what the encoder reads
        batch = enc.canonical(batch)
    edge_layer = batch.layer.index_select(0, batch.edge_index[0])
    for l in range(len(sizes) - 1):
        w = batch.edge_attr[edge_layer == l, 0]
        ws = (w - enc.edge_shift[l, 0]) / enc.edge_scale[l, 0]
        b = batch.x[batch.layer == l + 1, 0]
        print(f'layer {l}: weight std {w.std():.3e} -> {ws.std():.3f}, |w| mean {w.abs().mean():.3e}; '
              f'bias std {b.std():.3e}, |b| mean {b.abs().mean():.3e}, share of |b| < 1e-3 {float((b.abs() < 1e-3).float().mean()):.2f}')


def evaluate(model, dataset, index, batch_size=512):
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(index), batch_size):
            b = stacked(dataset, index[start:start + batch_size])
            correct += int((model(b).argmax(-1) == b.y.view(-1)).sum())
    return correct / len(index)


def _load(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return []


def _save(path, results) -> None:
    write_json(path, results)
    lines = ['| variant | best val | final val | train | epochs | train graphs | time (s) |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for r in results:
        lines.append(f"| `{r['variant']}` | {100 * r['best_val']:.1f} | {100 * r['final_val']:.1f} | "
                     f"{100 * r['train']:.1f} | {r['epochs']} | {r['train_graphs']} | {r['seconds']:.0f} |")
    with atomic_path(os.path.splitext(path)[0] + '.md') as tmp, open(tmp, 'w') as f:
        f.write(f'Written by `python benchmarks/weight_only_gnn.py train ... --out {path}` '
                f'(validation: {results[0]["val_graphs"]} graphs of the val split; accuracy in %).\n\n'
                + '\n'.join(lines) + '\n')


def train(args) -> None:
    tr, va = INRGraphDataset(args.root, 'train'), INRGraphDataset(args.root, 'val')
    train_index, val_index = subset(tr, args.per_class), subset(va, args.val_per_class)
    sizes = tr.layer_sizes
    results = _load(args.out)
    for name in args.variant or ['base']:
        kwargs = parse_variant(name)
        setting = dict(variant=name, root=args.root, epochs=args.epochs, train_graphs=len(train_index),
                       val_graphs=len(val_index), lr=args.lr, batch_size=args.batch_size, seed=args.seed)
        if any(all(r.get(k) == v for k, v in setting.items()) for r in results):
            print(f'{name}: already in {args.out}')
            continue
        torch.manual_seed(args.seed)
        model = GraphClassifier(int(tr.num_classes), in_features=sizes[0], out_features=sizes[-1], **kwargs)
        model.encoder.fit_normalization(stacked(tr, train_index[torch.randperm(len(train_index))[:1024]]))
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        steps = args.epochs * math.ceil(len(train_index) / args.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.05)
        t0, best = time.time(), 0.0
        for epoch in range(args.epochs):
            model.train()
            order = train_index[torch.randperm(len(train_index))]
            for start in range(0, len(order), args.batch_size):
                b = stacked(tr, order[start:start + args.batch_size])
                loss = F.cross_entropy(model(b), b.y.view(-1))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
            val = evaluate(model, va, val_index)
            best = max(best, val)
            print(f'{name} epoch {epoch + 1}: loss {loss.item():.3f} val {val:.3f} ({time.time() - t0:.0f} s)', flush=True)
        tr_acc = evaluate(model, tr, train_index[torch.randperm(len(train_index))[:2000]])
        print(f'RESULT {name}: best val {best:.3f}, final val {val:.3f}, train {tr_acc:.3f}, '
              f'{time.time() - t0:.0f} s', flush=True)
        if args.out:
            results = [r for r in _load(args.out) if r['variant'] != name or r.get('root') != args.root]
            results.append(dict(setting, encoder=kwargs, best_val=best, final_val=val, train=tr_acc,
                                seconds=time.time() - t0))
            _save(args.out, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=['diagnose', 'train'])
    parser.add_argument('--root', default=os.path.expanduser('~/.cache/nngraph/fashion-mnist'))
    parser.add_argument('--variant', action='append')
    parser.add_argument('--per-class', type=int, default=500)
    parser.add_argument('--val-per-class', type=int, default=200)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--weight-decay', type=float, default=1e-4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='JSON file the results are added to (and a .md table beside it)')
    args = parser.parse_args()
    (diagnose if args.what == 'diagnose' else train)(args)


if __name__ == '__main__':
    main()
