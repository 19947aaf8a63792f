"""Batched INR fitting: INRs/s against one-at-a-time, FLOP/s against a plain matmul.

All figures come from one run on one thread (``--threads``), side by side:

* ``matmul_gflops``: a plain ``n x n`` float32 matmul, best of several;
* batched: :func:`nngraph.inr.fit` on ``--inrs`` digits INRs of the default
  build's conventions (16x16 grid, 2-32-32-1, w0 15) in batches of
  ``--batch`` (the build's chunk size), a fixed budget of ``--steps`` Adam
  steps (no early stop), INRs/s and achieved
  FLOP/s (the matmul FLOPs of forward and backward, ``3 * 2 * P * sum(d_l
  d_{l+1})`` per INR and step) as a fraction of the matmul's;
* one-at-a-time: the usual loop, a :class:`nngraph.inr.Siren` module and
  ``torch.optim.Adam`` per INR, same budget; and ``fit`` on one INR at a time;
* the default digits-INR build (``build_inr_dataset('digits')``): wall time
  and mean PSNR (reused from ``--build-dir`` when already built there).

Last line: one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nngraph.data import DEFAULTS, build_inr_dataset, load_source  # noqa: E402
from nngraph.inr import Siren, SirenConfig, fit, grid  # noqa: E402


def matmul_gflops(n: int, device, sync, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float('inf')
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def signals(n: int, size: int):
    images, _, _ = load_source('digits', None if size == 8 else size)
    H, W, C = images.shape[1:]
    return images[:n].reshape(n, H * W, C), grid(H, W)


def naive_fit(x, coords, config, steps, lr, seed):
    """The usual way: one nn.Module and one torch.optim.Adam per INR."""
    net = Siren(config, seed=seed).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(net(coords), x)
        loss.backward()
        opt.step()
    return net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--inrs', type=int, default=512, help='INRs fitted batched')
    p.add_argument('--batch', type=int, default=DEFAULTS['chunk_size'], help='INRs per batch')
    p.add_argument('--device', default='cpu', help='cpu, or cuda for a GPU figure')
    p.add_argument('--single', type=int, default=8, help='INRs fitted one at a time')
    p.add_argument('--steps', type=int, default=50, help='Adam steps per INR (the same budget for all)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--grid', type=int, default=DEFAULTS['grid'],
                   help="image side the INRs fit (8: the digits' native grid, no upsampling)")
    p.add_argument('--matmul', type=int, default=2048, help='size of the reference matmul')
    p.add_argument('--build-dir', default='data/digits', help='where the default build lives')
    p.add_argument('--skip-build', action='store_true')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    peak = matmul_gflops(args.matmul, dev, sync)
    x, coords = signals(args.inrs, args.grid)
    x, coords = x.to(dev), coords.to(dev)
    kw = dict(hidden=DEFAULTS['hidden'], w0=DEFAULTS['w0'], first_w0=DEFAULTS['first_w0'],
              init=DEFAULTS['init'], lr=DEFAULTS['lr'], steps=args.steps, target_psnr=None,
              threads=args.threads, progress=False)
    fit(x[:64], coords, **dict(kw, steps=2))          # warm-up

    sync()
    t = time.perf_counter()
    results = [fit(x[a:a + args.batch], coords, seeds=torch.arange(a, min(a + args.batch, args.inrs))[:, None],
                   **kw) for a in range(0, args.inrs, args.batch)]
    sync()
    batched_s = time.perf_counter() - t
    res = results[0]
    mean_psnr = float(torch.cat([r.psnr for r in results]).mean())
    sizes = res.config.layer_sizes
    P = coords.shape[0]
    flop_per_step = 3 * 2 * P * sum(sizes[l] * sizes[l + 1] for l in range(len(sizes) - 1))
    achieved = flop_per_step * args.inrs * args.steps / batched_s / 1e9

    config = SirenConfig(sizes, w0=DEFAULTS['w0'], first_w0=DEFAULTS['first_w0'], init=DEFAULTS['init'])
    sync()
    t = time.perf_counter()
    for k in range(args.single):
        naive_fit(x[k], coords, config, args.steps, DEFAULTS['lr'], seed=k)
    sync()
    naive_s = (time.perf_counter() - t) / args.single
    t = time.perf_counter()
    for k in range(args.single):
        fit(x[k:k + 1], coords, seeds=torch.tensor([[k]]), **kw)
    sync()
    single_fit_s = (time.perf_counter() - t) / args.single

    batched_rate = args.inrs / batched_s
    figures = dict(
        device=str(dev), threads=args.threads, steps=args.steps, inrs=args.inrs, batch=args.batch,
        grid=int(P ** 0.5),
        layer_sizes=list(sizes), matmul_gflops=round(peak, 2),
        batched_inrs_per_s=round(batched_rate, 2),
        naive_inrs_per_s=round(1 / naive_s, 3), fit_one_at_a_time_inrs_per_s=round(1 / single_fit_s, 3),
        speedup_vs_naive=round(batched_rate * naive_s, 1),
        speedup_vs_fit_one_at_a_time=round(batched_rate * single_fit_s, 1),
        batched_gflops=round(achieved, 2), fraction_of_matmul=round(achieved / peak, 3),
        batched_mean_psnr_after_budget=round(mean_psnr, 2),
    )
    print(f'matmul {args.matmul}^3: {peak:.1f} GFLOP/s; batched fit of {args.inrs} INRs x {args.steps} '
          f'steps: {batched_rate:.1f} INRs/s, {achieved:.1f} GFLOP/s ({achieved / peak:.0%} of the matmul)')
    print(f'one at a time: Siren + torch.optim.Adam {1 / naive_s:.2f} INRs/s '
          f'({figures["speedup_vs_naive"]}x slower), fit() on one INR {1 / single_fit_s:.2f} INRs/s')

    if not args.skip_build and dev.type == 'cpu':
        already = os.path.exists(os.path.join(args.build_dir, 'manifest.json'))
        t = time.perf_counter()
        out = build_inr_dataset('digits', out=args.build_dir, progress=False)
        build_s = time.perf_counter() - t
        with open(os.path.join(out, 'manifest.json')) as f:
            manifest = json.load(f)
        splits = manifest['splits']
        n = sum(s['num_inrs'] for s in splits.values())
        mean = sum(s['psnr_mean'] * s['num_inrs'] for s in splits.values()) / n
        figures.update(default_build_inrs=n, default_build_views=manifest['settings']['views'],
                       default_build_mean_psnr=round(mean, 2),
                       default_build_min_psnr=round(min(s['psnr_min'] for s in splits.values()), 2),
                       default_build_seconds=None if already else round(build_s, 1),
                       default_build_reused=already)
        print(f'default digits build: {n} INRs, mean PSNR {mean:.2f} dB, '
              + ('reused' if already else f'{build_s:.1f} s'))
    print(json.dumps(figures))


if __name__ == '__main__':
    main()
