"""Batched INR fitting: INRs/s per core of each way to fit, side by side in one run.

For each image side in ``--sizes`` (default 16 and 28), on ``--inrs`` digits
images resized to that side, with a fixed budget of ``--steps`` Adam steps
(no early stop), in chunks of ``--batch`` INRs, on one thread:

* ``grid``: :func:`nngraph.inr.fit` as it runs by default on a pixel grid (the
  first layer factorised over rows and columns, blocks of INRs sized for the
  cache);
* ``generic``: ``fit(..., separable=False)``, the batched path of the
  previous version (hand-written gradients, one pass per op over all INRs);
* ``old``: with ``--old-rev REV``, ``nngraph/inr.py`` as it was at git
  revision ``REV``, loaded beside the current one (the previous batched path
  exactly, its Adam included);
* ``naive``: the usual loop, one :class:`nngraph.inr.Siren` module and one
  ``torch.optim.Adam`` per INR (``--single`` INRs).

Conventions: at 16x16 w0 15 and lr 2e-3 (the digits build's defaults when
the README's figures were taken; it now fits DWSNets' conventions, at the same
cost per step), at 28x28 the Fashion-MNIST build's 2-32-32-1 with w0 30; init
``'siren'`` in both (the init does not change the cost, and the old code knows
it, so every path fits the same INRs and their weights are compared).

INRs/s per core is measured on process CPU time (one thread, so CPU time is
core time: robust when other jobs share the machine); wall-clock rates are
printed beside. Every path runs ``--repeats`` times, interleaved, and the
best run counts. For each path, a short profile (``--profile-steps``) gives
the fraction of the time in ``sin``/``cos`` and in matmuls, and
``matmul_flop_fraction`` is the achieved rate of the network's own matmul
FLOPs (``3 * 2 * P * sum(d_l d_{l+1})`` per INR and step: forward, input
gradient, weight gradient) as a fraction of a large square matmul's FLOP/s.
The first ``--check`` INRs of each path are compared with the same INRs
fitted in float64 (max PSNR and weight differences): the float32 paths drift
from it, and from each other, by float rounding amplified over the Adam steps.
The digits build (``build_inr_dataset('digits')``) follows unless ``--skip-build``.

Last line: one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nngraph import inr as I  # noqa: E402
from nngraph.data import DEFAULTS, build_inr_dataset, load_source  # noqa: E402

SINCOS = ('aten::sin', 'aten::cos')
MATMUL = ('aten::bmm', 'aten::baddbmm', 'aten::mm', 'aten::addmm', 'aten::matmul', 'aten::linear')


def matmul_gflops(n: int, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float('inf')
    for _ in range(repeats):
        t = time.process_time()
        a @ b
        best = min(best, time.process_time() - t)
    return 2 * n ** 3 / best / 1e9


def load_old(rev: str):
    """``nngraph/inr.py`` at git revision ``rev``, as a module of its own."""
    text = subprocess.run(['git', 'show', f'{rev}:nngraph/inr.py'], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), 'inr_old.py')
    with open(path, 'w') as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location('nngraph_inr_old', path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def naive_fit(x, coords, config, steps, lr, seed):
    """The usual way: one nn.Module and one torch.optim.Adam per INR."""
    net = I.Siren(config, seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(net(coords), x)
        loss.backward()
        opt.step()
    return net


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - t


def profile_fractions(fn):
    """Fractions of the self CPU time spent in sin/cos and in matmuls."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    sincos = sum(e.self_cpu_time_total for e in events if e.key in SINCOS)
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL)
    return sincos / total, mm / total


def bench_size(size, args, old, peak):
    images, _, _ = load_source('digits', size)
    n = args.inrs
    x = images[:n].reshape(n, size * size, 1)
    coords = I.grid(size)
    # The init does not change the cost; 'siren' runs under the old code too,
    # so every path fits the very same INRs.
    if size == 16:
        conv = dict(w0=15.0, first_w0=None, init='siren')
        label = 'w0 15 (the digits build\'s former defaults)'
    else:
        conv = dict(w0=30.0, first_w0=None, init='siren')
        label = 'w0 30 (the Fashion-MNIST build\'s widths and frequency)'
    lr = 2e-3
    common = dict(hidden=DEFAULTS['hidden'], lr=lr, target_psnr=None, threads=1, progress=False, **conv)

    def batched(module, steps, **extra):
        def run():
            return [module.fit(x[a:a + args.batch], coords, steps=steps,
                               seeds=torch.arange(a, min(a + args.batch, n))[:, None], **common, **extra)
                    for a in range(0, n, args.batch)]
        return run

    paths = {'grid': batched(I, args.steps), 'generic': batched(I, args.steps, separable=False)}
    if old is not None:
        paths['old'] = batched(old, args.steps)
    I.fit(x[:4], coords, steps=2, **common)        # warm-up
    best = {k: (float('inf'), float('inf')) for k in paths}
    results = {}
    for _ in range(args.repeats):
        for name, run in paths.items():
            res, cpu, wall = timed(run)
            results[name] = res
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))

    config = results['grid'][0].config
    sizes = config.layer_sizes
    P = size * size
    flop = 3 * 2 * P * sum(sizes[l] * sizes[l + 1] for l in range(len(sizes) - 1))
    out = dict(grid=size, conventions=label, layer_sizes=list(sizes), steps=args.steps, inrs=n,
               batch=args.batch)
    for name in paths:
        cpu, wall = best[name]
        psnr = torch.cat([r.psnr for r in results[name]])
        small = {'grid': batched(I, args.profile_steps), 'generic': batched(I, args.profile_steps, separable=False),
                 'old': batched(old, args.profile_steps) if old is not None else None}[name]
        f_sincos, f_mm = profile_fractions(small)
        out[name] = dict(inrs_per_s_per_core=round(n / cpu, 2), inrs_per_s_wall=round(n / wall, 2),
                         sincos_fraction=round(f_sincos, 3), matmul_fraction=round(f_mm, 3),
                         matmul_flop_fraction=round(flop * n * args.steps / cpu / 1e9 / peak, 3),
                         mean_psnr=round(float(psnr.mean()), 3))
    # Same INRs up to float rounding: after hundreds of float32 Adam steps near
    # convergence the paths drift apart, so each is compared with the same
    # INRs fitted in float64 (the generic path), on the first --check INRs.
    k = min(args.check, n)
    f64 = dict(common, steps=args.steps, seeds=torch.arange(k)[:, None])
    truth = I.fit(x[:k].double(), coords.double(), separable=False, **f64)
    for name in paths:
        first = results[name][0]
        m = min(k, len(first))
        out[name]['max_abs_psnr_diff_vs_float64'] = round(
            float((first.psnr[:m].double() - truth.psnr[:m]).abs().max()), 4)
        out[name]['max_abs_weight_diff_vs_float64'] = float(max(
            (a[:m].double() - b[:m]).abs().max() for a, b in zip(first.weights + first.biases,
                                                               truth.weights + truth.biases)))

    naive_cfg = config
    c0 = time.process_time()
    for k in range(args.single):
        naive_fit(x[k], coords, naive_cfg, args.steps, lr, seed=k)
    naive_cpu = (time.process_time() - c0) / args.single
    out['naive'] = dict(inrs_per_s_per_core=round(1 / naive_cpu, 3))
    for name in paths:
        out[name]['speedup_vs_naive'] = round(out[name]['inrs_per_s_per_core'] * naive_cpu, 1)
    if 'generic' in paths:
        out['grid']['speedup_vs_generic'] = round(best['generic'][0] / best['grid'][0], 2)
    if old is not None:
        out['grid']['speedup_vs_old'] = round(best['old'][0] / best['grid'][0], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', default='16,28', help='image sides, comma-separated')
    p.add_argument('--inrs', type=int, default=128, help='INRs fitted batched per path')
    p.add_argument('--batch', type=int, default=DEFAULTS['chunk_size'], help='INRs per fit() call (chunk)')
    p.add_argument('--single', type=int, default=2, help='INRs fitted one at a time (naive loop)')
    p.add_argument('--steps', type=int, default=300, help='Adam steps per INR (the same budget for all)')
    p.add_argument('--repeats', type=int, default=2, help='interleaved runs per path; the best counts')
    p.add_argument('--profile-steps', type=int, default=50, help='steps of the profiled run')
    p.add_argument('--check', type=int, default=16, help='INRs compared with a float64 fit')
    p.add_argument('--old-rev', default=None, help='also time nngraph/inr.py at this git revision')
    p.add_argument('--matmul', type=int, default=2048, help='size of the reference matmul')
    p.add_argument('--build-dir', default='data/digits', help='where the default build lives')
    p.add_argument('--skip-build', action='store_true')
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    peak = matmul_gflops(args.matmul)
    old = load_old(args.old_rev) if args.old_rev else None
    figures = dict(threads=1, matmul_gflops=round(peak, 1), old_rev=args.old_rev, sizes={})
    for size in [int(s) for s in args.sizes.split(',')]:
        out = bench_size(size, args, old, peak)
        figures['sizes'][str(size)] = out
        print(f'{size}x{size}, {out["conventions"]}, {args.inrs} INRs x {args.steps} steps, chunks of {args.batch}:')
        for name in ('grid', 'generic', 'old'):
            if name in out:
                f = out[name]
                print(f'  {name:8s} {f["inrs_per_s_per_core"]:7.2f} INRs/s per core ({f["inrs_per_s_wall"]:.2f} wall); '
                      f'sin/cos {f["sincos_fraction"]:.0%}, matmuls {f["matmul_fraction"]:.0%} of the time; '
                      f'{f["matmul_flop_fraction"]:.0%} of the matmul FLOP/s; {f["speedup_vs_naive"]}x naive; '
                      f'mean PSNR {f["mean_psnr"]:.2f} (max |diff| to float64 '
                      f'{f["max_abs_psnr_diff_vs_float64"]:.3f} dB, weights {f["max_abs_weight_diff_vs_float64"]:.1e})')
        print(f'  naive    {out["naive"]["inrs_per_s_per_core"]:7.3f} INRs/s per core (Siren + torch.optim.Adam)')
        print('  grid vs ' + ', '.join(f'{k[8:]} {v}x' for k, v in out['grid'].items() if k.startswith('speedup_vs_')))

    if not args.skip_build:
        already = os.path.exists(os.path.join(args.build_dir, 'manifest.json'))
        t = time.perf_counter()
        out = build_inr_dataset('digits', out=args.build_dir, progress=False)
        build_s = time.perf_counter() - t
        with open(os.path.join(out, 'manifest.json')) as f:
            manifest = json.load(f)
        splits = manifest['splits']
        n = sum(s['num_inrs'] for s in splits.values())
        mean = sum(s['psnr_mean'] * s['num_inrs'] for s in splits.values()) / n
        figures.update(default_build_inrs=n, default_build_mean_psnr=round(mean, 2),
                       default_build_seconds=None if already else round(build_s, 1),
                       default_build_reused=already)
        print(f'default digits build: {n} INRs, mean PSNR {mean:.2f} dB, '
              + ('reused' if already else f'{build_s:.1f} s'))
    print(json.dumps(figures))


if __name__ == '__main__':
    main()
