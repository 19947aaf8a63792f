"""Does sign-aware weight matching bring real INRs closer than permutations alone?

Fits 2-32-32-1 SIRENs (``sin(30 (W x + b))``, SIREN initialisation, each
network its own random init) to 8x8 ``sklearn.datasets.load_digits`` images
(pixel coordinates on a grid in [-1, 1]^2, intensities scaled to [-1, 1];
``--side 28`` upsamples them bilinearly for a harder fit),
all networks at once with batched matrix products and Adam. Then, for
disjoint pairs of fitted INRs, compares the parameter distance
``||theta_ref - theta_other||``:

* unaligned;
* after ``align(ref, other)`` (hidden-neuron permutations);
* after ``align(ref, other, signs=True)`` (permutations and sign flips);

and checks that both aligned networks still compute ``other``'s function on
the pixel grid. Run: ``PYTHONPATH=. python benchmarks/alignment_signs.py``
(about half a minute); last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from statistics import mean, median

import torch
from sklearn.datasets import load_digits

from nngraph.graph import forward, from_weights
from nngraph.matching import align, distance

W0 = 30.0


def grid(side: int = 8) -> torch.Tensor:
    """Pixel centres of a ``side x side`` image on [-1, 1]^2, row-major ``[side^2, 2]``."""
    t = torch.linspace(-1, 1, side)
    yy, xx = torch.meshgrid(t, t, indexing='ij')
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def init_sirens(n: int, width: int, seed: int):
    """``n`` independent SIREN initialisations of 2-w-w-1 as stacked tensors."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (2, width, width, 1)
    params = []
    for l in range(3):
        d_in, d_out = sizes[l], sizes[l + 1]
        bound = 1.0 / d_in if l == 0 else math.sqrt(6.0 / d_in) / W0
        w = (torch.rand(n, d_out, d_in, generator=gen) * 2 - 1) * bound
        b = (torch.rand(n, d_out, generator=gen) * 2 - 1) / math.sqrt(d_in)
        params += [w.requires_grad_(), b.requires_grad_()]
    return params


def siren_forward(params, coords: torch.Tensor) -> torch.Tensor:
    """All networks on the same ``coords [P, 2]``: ``[n, P, 1]``."""
    h = coords.expand(params[0].shape[0], -1, -1)
    for l in range(3):
        w, b = params[2 * l], params[2 * l + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if l < 2:
            h = torch.sin(W0 * h)
    return h


def fit(images: torch.Tensor, width: int, steps: int, lr: float, seed: int):
    """Fits one SIREN per image (``images [n, side * side]`` in [-1, 1]);
    returns the stacked parameters and the final per-image MSE."""
    coords = grid(int(round(images.shape[1] ** 0.5)))
    params = init_sirens(images.shape[0], width, seed)
    opt = torch.optim.Adam(params, lr=lr)
    target = images.unsqueeze(-1)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        # summed over networks: each network gets the gradient of its own mean loss
        loss = (siren_forward(params, coords) - target).pow(2).mean(dim=(1, 2)).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = (siren_forward(params, coords) - target).pow(2).mean(dim=(1, 2))
    return [p.detach() for p in params], mse


def main(num_pairs: int = 50, width: int = 32, steps: int = 500, lr: float = 1e-3, seed: int = 0,
         side: int = 8):
    torch.manual_seed(seed)
    # tiny tensors: one thread avoids OpenMP hand-offs that cost more than the work
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    digits = load_digits()
    n = 2 * num_pairs
    pick = torch.randperm(len(digits.images), generator=torch.Generator().manual_seed(seed))[:n]
    images = torch.tensor(digits.images, dtype=torch.float32)[pick].unsqueeze(1) / 16.0 * 2 - 1
    if side != 8:   # bilinear upsampling: more pixels to fit, a harder task
        images = torch.nn.functional.interpolate(images, size=(side, side), mode='bilinear',
                                                 align_corners=True)
    images = images.reshape(n, -1)
    params, mse = fit(images, width, steps, lr, seed)
    fit_s = time.perf_counter() - t0
    init = [p.detach() for p in init_sirens(n, width, seed)]   # the same draws fit() started from

    def graphs_of(ps):
        return [from_weights([ps[0][i], ps[2][i], ps[4][i]], [ps[1][i], ps[3][i], ps[5][i]],
                             f'sine:{W0}') for i in range(n)]
    graphs, inits = graphs_of(params), graphs_of(init)
    moved = mean(float(distance(g, g0)) / float(g0.edge_attr.norm().hypot(g0.x.norm()))
                 for g, g0 in zip(graphs, inits))

    coords = grid(side)
    d_none, d_perm, d_sign, f_err = [], [], [], 0.0
    t1 = time.perf_counter()
    for k in range(num_pairs):
        ref, other = graphs[2 * k], graphs[2 * k + 1]
        perm = align(ref, other)
        sign = align(ref, other, signs=True)
        d_none.append(float(distance(ref, other)))
        d_perm.append(float(distance(ref, perm)))
        d_sign.append(float(distance(ref, sign)))
        target = forward(other, coords)
        f_err = max(f_err, float((forward(perm, coords) - target).abs().max()),
                    float((forward(sign, coords) - target).abs().max()))
    align_s = time.perf_counter() - t1

    rel_gain = [(p - s) / p for p, s in zip(d_perm, d_sign)]
    # the same comparison on the unfitted initialisations, to see what fitting changes
    i_perm = [float(distance(inits[2 * k], align(inits[2 * k], inits[2 * k + 1])))
              for k in range(num_pairs)]
    i_sign = [float(distance(inits[2 * k], align(inits[2 * k], inits[2 * k + 1], signs=True)))
              for k in range(num_pairs)]
    result = dict(
        benchmark='alignment_signs', pairs=num_pairs, width=width, side=side, steps=steps, lr=lr,
        fit_mse_mean=float(f'{float(mse.mean()):.3g}'), fit_mse_max=float(f'{float(mse.max()):.3g}'),
        relative_move_from_init=round(moved, 4),
        param_norm_mean=round(mean(float(g.edge_attr.norm().hypot(g.x.norm())) for g in graphs), 4),
        dist_unaligned_mean=round(mean(d_none), 4),
        dist_perm_mean=round(mean(d_perm), 4),
        dist_perm_sign_mean=round(mean(d_sign), 4),
        perm_vs_unaligned_reduction=round(1 - mean(d_perm) / mean(d_none), 4),
        sign_vs_perm_reduction_of_means=round(1 - mean(d_sign) / mean(d_perm), 4),
        sign_vs_perm_reduction_per_pair_mean=round(mean(rel_gain), 4),
        sign_vs_perm_reduction_per_pair_median=round(median(rel_gain), 4),
        pairs_sign_better=sum(s < p - 1e-6 for p, s in zip(d_perm, d_sign)),
        pairs_sign_worse=sum(s > p + 1e-6 for p, s in zip(d_perm, d_sign)),
        init_sign_vs_perm_reduction_of_means=round(1 - mean(i_sign) / mean(i_perm), 4),
        max_function_error=f_err, fit_seconds=round(fit_s, 2), align_seconds=round(align_s, 2),
    )
    return result


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--pairs', type=int, default=50)
    ap.add_argument('--width', type=int, default=32)
    ap.add_argument('--steps', type=int, default=500)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--side', type=int, default=8, help='image side (digits are 8x8; more upsamples)')
    args = ap.parse_args()
    res = main(args.pairs, args.width, args.steps, args.lr, args.seed, args.side)
    for key in ('fit_mse_mean', 'relative_move_from_init', 'dist_unaligned_mean', 'dist_perm_mean',
                'dist_perm_sign_mean',
                'perm_vs_unaligned_reduction', 'sign_vs_perm_reduction_of_means',
                'sign_vs_perm_reduction_per_pair_median', 'pairs_sign_better', 'pairs_sign_worse',
                'init_sign_vs_perm_reduction_of_means',
                'max_function_error'):
        print(f'{key:>40}: {res[key]}')
    print(json.dumps(res))
