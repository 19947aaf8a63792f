"""How long to fit FMNIST-INR: PSNR and class signal in the weights per fitting budget.

The build's steps and learning rate decide two things: how well each INR
represents its image (PSNR) and how much of the image the weights carry
beyond their random initialisation (class signal). For each ``steps:lr``
setting this script fits the same Fashion-MNIST images with independent
initialisations (the DWSNets preset by default: 2-32-32-1, w0 = 30, zero
biases, output + 0.5) and reports

* PSNR on the 28x28 grid (mean, 10th percentile, min) and fitting time;
* test accuracy of logistic regression (standardised features, sklearn) on
  the raw flattened weights, on the weights aligned to one reference INR by
  :func:`nngraph.matching.align` (with signs), and on the INR's function
  values at the pixels (what a perfect weight-reader could recover);
* the same on the pixels themselves, as the ceiling of a linear model.

Run: ``python benchmarks/fmnist_fit_settings.py --train 1000 --test 500
--settings 300:1e-3 500:1e-3 500:5e-3`` (needs ``apt-get install -y
dataset-fashion-mnist``). ``--from-build DIR`` scores the same images'
INRs from an existing build instead of fitting them (e.g. the full
FMNIST-INR build, to check it against the setting it was built with).
Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch_geometric.data import Batch

from nngraph import inr as I
from nngraph.data.build import fixed_splits
from nngraph.data.sources import load_idx_source
from nngraph.graph import forward, from_weights, stacked_layer_views
from nngraph.matching import align


def flat(graph: Batch) -> np.ndarray:
    """``[B, num_params]``: every graph's weights and biases, layer by layer."""
    weights, biases = stacked_layer_views(graph)
    B = graph.num_graphs
    return torch.cat([t.reshape(B, -1) for pair in zip(weights, biases) for t in pair], 1).numpy()


def probe(features_train: np.ndarray, y_train: np.ndarray, features_test: np.ndarray,
          y_test: np.ndarray) -> float:
    """Test accuracy (%) of standardised logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    model.fit(features_train, y_train)
    return 100.0 * float((model.predict(features_test) == y_test).mean())


def score(res_weights, res_biases, activation, coords, y, n_train) -> dict:
    """Logistic-regression test accuracy on raw, aligned (with signs) and
    function-value features of INRs ``[B]`` (the first ``n_train`` train)."""
    graphs = Batch.from_data_list([
        from_weights([w[k] for w in res_weights], [b[k] for b in res_biases], activation)
        for k in range(res_weights[0].shape[0])])
    raw = flat(graphs)
    aligned = flat(align(graphs.get_example(0), graphs, signs=True))
    values = forward(graphs, coords)[..., 0].numpy()
    return dict(raw=probe(raw[:n_train], y[:n_train], raw[n_train:], y[n_train:]),
                aligned_signs=probe(aligned[:n_train], y[:n_train], aligned[n_train:], y[n_train:]),
                function=probe(values[:n_train], y[:n_train], values[n_train:], y[n_train:]))


def report(row: dict) -> None:
    print(f'steps {row["steps"]:5d} lr {row["lr"]:.0e}: PSNR {row["psnr_mean"]:.1f} dB '
          f'(p10 {row["psnr_p10"]:.1f}, min {row["psnr_min"]:.1f}) | logistic regression: raw '
          f'{row["raw"]:.1f}%, aligned+signs {row["aligned_signs"]:.1f}%, function values '
          f'{row["function"]:.1f}%', flush=True)


def psnr_stats(psnr: np.ndarray) -> dict:
    return dict(psnr_mean=float(psnr.mean()), psnr_p10=float(np.percentile(psnr, 10)),
                psnr_min=float(psnr.min()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--train', type=int, default=1000, help='training images (published train split)')
    p.add_argument('--test', type=int, default=500, help='official test images')
    p.add_argument('--settings', nargs='+', default=['300:1e-3', '500:1e-3', '500:5e-3'],
                   help='steps:lr pairs')
    p.add_argument('--init', default='dwsnets', help='initialisation preset')
    p.add_argument('--w0', type=float, default=30.0)
    p.add_argument('--output-offset', type=float, default=0.5)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--source-dir', default=None)
    p.add_argument('--from-build', default=None, help='score this build\'s INRs of the same images')
    args = p.parse_args()
    torch.manual_seed(0)

    images, labels, num_train = load_idx_source('fashion-mnist', args.source_dir)
    splits = fixed_splits('fashion-mnist', num_train, labels.numel(), labels)
    ids = torch.cat([splits['train'][:args.train], splits['test'][:args.test]])
    n_train = min(args.train, splits['train'].numel())
    H, W = images.shape[1:3]
    signals = images[ids].reshape(len(ids), H * W, 1)
    y = labels[ids].numpy()
    coords = I.grid(H, W)
    seeds = (ids + args.seed * (1 << 20)).unsqueeze(1)          # one independent start per image

    pixels = signals[..., 0].numpy()
    pixel_acc = probe(pixels[:n_train], y[:n_train], pixels[n_train:], y[n_train:])
    print(f'{len(ids)} images ({n_train} train / {len(ids) - n_train} test); logistic regression '
          f'on the pixels: {pixel_acc:.1f}%')
    rows = []
    if args.from_build:
        from nngraph.data import store
        manifest = store.read_manifest(args.from_build)
        parts = [store.read_split(args.from_build, s) for s in ('train', 'test')]
        weights, biases, psnr = [], [], []
        for part, want in zip(parts, (ids[:n_train], ids[n_train:])):
            pos = {int(o): k for k, o in enumerate(part['object_id'].tolist()) if int(part['view_id'][k]) == 0}
            missing = [int(o) for o in want if int(o) not in pos]
            if missing:
                raise SystemExit(f'{args.from_build} holds no INR of image {missing[0]}')
            sel = torch.tensor([pos[int(o)] for o in want])
            weights.append([w[sel] for w in part['weights']])
            biases.append([b[sel] for b in part['biases']])
            psnr.append(part['psnr'][sel])
        weights = [torch.cat(ws) for ws in zip(*weights)]
        biases = [torch.cat(bs) for bs in zip(*biases)]
        settings = manifest['settings']
        row = dict(steps=int(settings['steps']), lr=float(settings['lr']), build=args.from_build,
                   convention=manifest['convention'], **psnr_stats(torch.cat(psnr).double().numpy()),
                   **score(weights, biases, manifest['activation'], coords, y, n_train))
        rows.append(row)
        report(row)
    for setting in ([] if args.from_build else args.settings):
        steps, lr = setting.split(':')
        t0 = time.perf_counter()
        res = I.fit(signals, coords, seeds=seeds, init=args.init, w0=args.w0,
                    output_offset=args.output_offset, steps=int(steps), lr=float(lr),
                    target_psnr=None, progress=False)
        fit_s = time.perf_counter() - t0
        psnr = res.psnr.double().numpy()
        row = dict(steps=int(steps), lr=float(lr), fit_s=fit_s, inrs_per_s=len(res) / fit_s,
                   **psnr_stats(psnr), **score(res.weights, res.biases, res.activation, coords, y, n_train))
        rows.append(row)
        report(row)
    print(json.dumps(dict(benchmark='fmnist_fit_settings', init=args.init, train=n_train,
                          test=len(ids) - n_train, pixels=pixel_acc, rows=rows)))


if __name__ == '__main__':
    main()
