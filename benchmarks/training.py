"""Forward+backward throughput of the GNN encoder on 2-32-32-1 SIRENs.

Compares, in one run, the encoder's block path (uniform batches: broadcasts
and axis sums, no gather), its scatter path (index_select +
torch_geometric.utils.scatter, used for mixed architectures), and the same
model fed dense padded [B, N, N, D] edge tensors (the approach of the
neural-graphs code). Reports graphs/s, peak memory, and the FLOPs of the
encoder's linear layers as a fraction of a plain large matmul timed here.
With ``--compile`` it also times the block path through ``torch.compile``
(what ``compile: true`` in a training config does) against the same encoder
eager, at the default width.

    PYTHONPATH=. python benchmarks/training.py [--threads 2] [--widths 32,64,128]
    PYTHONPATH=. python benchmarks/training.py --compile --aggr mean,max --canonical-signs out \
        --widths 32,64 --batches 64 --no-dense      # the FMNIST encoder, eager vs compiled

Last line: one JSON object with all figures.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time

import torch
from torch_geometric.data import Batch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nngraph  # noqa: E402
from nngraph.models import GNNEncoder  # noqa: E402

SIZES = (2, 32, 32, 1)


def siren_batch(B: int) -> Batch:
    gen = torch.Generator().manual_seed(0)
    W = [torch.randn(B, b, a, generator=gen) / a ** 0.5 for a, b in zip(SIZES[:-1], SIZES[1:])]
    b = [torch.randn(B, d, generator=gen) * 0.1 for d in SIZES[1:]]
    return Batch.from_data_list([nngraph.from_weights([w[i] for w in W], [v[i] for v in b], 'sine:30.0')
                                 for i in range(B)])


def matmul_gflops(seconds: float = 2.0) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - t0) / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_fwd_bwd(enc: GNNEncoder, batch: Batch, path: str, seconds: float, compiled: bool = False) -> dict:
    """graphs/s of forward+backward, and extra memory (MB) of one step measured
    with the torch profiler's allocator statistics where available. With
    ``compiled``, through ``torch.compile(enc)`` (compiled by the first steps,
    which are not timed)."""
    fn = torch.compile(enc) if compiled else enc

    def step():
        enc.zero_grad(set_to_none=True)
        fn(batch, path=path).square().mean().backward()
    step()
    if compiled:
        step()                      # the backward graph is compiled on the first steps
    gc.collect()
    mem = None
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        # Peak of the running sum of CPU allocations (+) and frees (-) during
        # the step; *self* usage, so nested ops are not counted twice.
        events = sorted((e for e in prof.events() if e.self_cpu_memory_usage != 0),
                        key=lambda e: e.time_range.start)
        run = peak = 0
        for e in events:
            run += e.self_cpu_memory_usage
            peak = max(peak, run)
        mem = peak / 2 ** 20
    except Exception:   # profiler memory stats are best effort
        pass
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        step()
        n += 1
    dt = (time.perf_counter() - t0) / n
    return {'graphs_per_s': batch.num_graphs / dt, 'step_s': dt, 'peak_mem_mb': mem}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--widths', default='16,32,64', help='edge widths; node width is twice')
    p.add_argument('--default-width', type=int, default=32)
    p.add_argument('--layers', type=int, default=3)
    p.add_argument('--batches', default='32,128,512')
    p.add_argument('--seconds', type=float, default=2.0)
    p.add_argument('--no-dense', action='store_true')
    p.add_argument('--torch-scatter', action='store_true', help='also time torch-scatter directly')
    p.add_argument('--compile', action='store_true', help='also time the block path under torch.compile')
    p.add_argument('--aggr', default='mean', help="encoder aggregation, e.g. 'mean,max'")
    p.add_argument('--canonical-signs', default=None, help="'out' or 'bias': the sign-canonical encoder")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_gflops()
    print(f'matmul 2048^2: {peak:.1f} GFLOP/s on {args.threads} thread(s)')
    try:
        import torch_scatter  # noqa: F401
        have_ts = True
    except ImportError:
        have_ts = False
    results = {'matmul_gflops': peak, 'threads': args.threads, 'torch_scatter_installed': have_ts,
               'layer_sizes': SIZES, 'layers': args.layers, 'aggr': args.aggr,
               'canonical_signs': args.canonical_signs, 'runs': []}
    widths = [int(w) for w in args.widths.split(',')]
    for B in (int(b) for b in args.batches.split(',')):
        batch = siren_batch(B)
        for D in widths:
            enc = GNNEncoder(SIZES[0], SIZES[-1], hidden=2 * D, edge_hidden=D, layers=args.layers,
                             aggr=args.aggr, canonical_signs=args.canonical_signs)
            flops = 3 * enc.linear_flops(SIZES) * B       # forward + backward ~ 3x forward
            paths = ['blocks', 'sparse']
            if D == args.default_width and not args.no_dense and args.aggr in ('mean', 'sum'):
                paths.append('dense')
            if args.compile:
                paths.append('blocks+compile')
            for path in paths:
                r = time_fwd_bwd(enc, batch, path.split('+')[0], args.seconds, compiled=path.endswith('compile'))
                r.update(batch=B, width=D, path=path, backend='pyg',
                         matmul_fraction=flops / r['step_s'] / 1e9 / peak)
                results['runs'].append(r)
                print(f"B={B:4d} D={D:4d} {path:7s}: {r['graphs_per_s']:8.1f} graphs/s, "
                      f"{100 * r['matmul_fraction']:5.1f}% of matmul, peak {r['peak_mem_mb'] or float('nan'):8.1f} MB",
                      flush=True)
            if have_ts and args.torch_scatter and D == args.default_width:
                for aggr in ('mean', 'max'):
                    for backend in ('pyg', 'torch_scatter'):
                        enc2 = GNNEncoder(SIZES[0], SIZES[-1], hidden=2 * D, edge_hidden=D, layers=args.layers,
                                          aggr=aggr, scatter_backend=backend)
                        r = time_fwd_bwd(enc2, batch, 'sparse', args.seconds)
                        r.update(batch=B, width=D, path='sparse', aggr=aggr, backend=backend,
                                 matmul_fraction=flops / r['step_s'] / 1e9 / peak)
                        results['runs'].append(r)
                        print(f"B={B:4d} D={D:4d} sparse {aggr} {backend:13s}: {r['graphs_per_s']:8.1f} graphs/s",
                              flush=True)
    # Headline figures at the default width.
    def get(B, path, D=args.default_width):
        for r in results['runs']:
            if r['batch'] == B and r['width'] == D and r['path'] == path and r['backend'] == 'pyg' and 'aggr' not in r:
                return r
    summary = {}
    for B in (int(b) for b in args.batches.split(',')):
        blk, sp, de, co = get(B, 'blocks'), get(B, 'sparse'), get(B, 'dense'), get(B, 'blocks+compile')
        summary[B] = {'blocks_graphs_per_s': blk['graphs_per_s'], 'matmul_fraction': blk['matmul_fraction'],
                      'vs_sparse': blk['graphs_per_s'] / sp['graphs_per_s'],
                      'vs_dense': blk['graphs_per_s'] / de['graphs_per_s'] if de else None,
                      'compiled_vs_eager': co['graphs_per_s'] / blk['graphs_per_s'] if co else None}
    results['summary_default_width'] = summary
    results['peak_rss_mb'] = peak_rss_mb()
    print(json.dumps(results))


if __name__ == '__main__':
    main()
