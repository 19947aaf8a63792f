"""Do the digits-INR build's weights carry class signal? Build cost, PSNR and linear probes.

Scores complete digits-INR builds (``python -m nngraph.data build digits``):

* how well the INRs fit (PSNR over every INR of the build: mean, min) and
  how they behave between the pixels (mean PSNR on the grid with a point
  between every two pixels, against the 8x8 digit upsampled bilinearly: what
  off-grid transforms such as rotations see);
* test accuracy of logistic regression (sklearn, standardised features, C
  chosen on the validation INRs, trained on every training INR, all views)
  on four feature sets of each INR:

  - ``raw``: its flattened weights and biases, layer by layer;
  - ``aligned``: the same after weight matching to one reference INR (the
    first training INR), permutations and sign flips (the matching of
    :func:`nngraph.matching.align` with ``signs=True``, run on the stacked
    views of all INRs at once);
  - ``function``: its values on the build's pixel grid (what a perfect
    weight reader could recover; the reference a probe-feature model reads);
  - ``pixels``: the image it was fitted to (the ceiling of a linear model).

If the weights are mostly their random initialisation, ``raw`` and
``aligned`` sit at chance (10%) however good ``function`` is.

With ``--build`` a directory that holds no complete build is built first
(the digits defaults of :data:`nngraph.data.build.DEFAULTS`, or with
``--preset old`` the defaults before the DWSNets preset, each updated by
``--set KEY=VALUE``), timed (wall and process CPU seconds, written next to it
as ``build_time.json`` so that a later scoring run reports them too). Run
from the repository root, one job at a time (the build takes one core)::

    export PYTHONPATH=. OMP_NUM_THREADS=1
    python benchmarks/digits_weight_signal.py --build /tmp/digits-new
    python benchmarks/digits_weight_signal.py --build --preset old /tmp/digits-old
    python benchmarks/digits_weight_signal.py --build --set steps=300 --set lr=5e-4 /tmp/digits-s300
    python benchmarks/digits_weight_signal.py /tmp/digits-old /tmp/digits-new   # score again

Prints one table row per build and ends with one JSON line. Building takes
about 25 s (``--preset old``) to 2.5 min (the defaults) on one core, scoring
about 10 s per build.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from nngraph import inr as I
from nngraph.data import store
from nngraph.data.build import DEFAULTS, build_inr_dataset
from nngraph.data.sources import load_source
from nngraph.matching import apply_matching, match_layers

#: The digits defaults before they took DWSNets' preset: SIREN init, w0 = 15,
#: Adam lr 2e-3, each INR stopped at 40 dB (kept here to reproduce the comparison).
OLD_DEFAULTS: Dict[str, Any] = dict(
    views=4, val_views=1, test_views=1, grid=16, val_fraction=0.1, test_fraction=0.2,
    hidden=(32, 32), w0=15.0, first_w0=None, init='siren', output_offset=0.0,
    steps=500, lr=2e-3, target_psnr=40.0, chunk_size=128,
)
C_GRID = (1e-3, 1e-2, 1e-1, 1.0)
FEATURES = ('raw', 'aligned', 'function', 'pixels')
BUILD_TIME = 'build_time.json'


# --------------------------------------------------------------------------- #
# Building
# --------------------------------------------------------------------------- #

def parse_value(text: str) -> Any:
    """``'1e-3'`` -> 1e-3, ``'none'`` -> None, ``'dwsnets'`` -> 'dwsnets'."""
    if text.lower() == 'none':
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build(out: str, preset: str, overrides: Dict[str, Any]) -> Optional[Dict[str, float]]:
    """Builds ``out`` unless a complete build is there; returns the timing of
    a build that ran (also written to ``out/build_time.json``), else ``None``."""
    if os.path.exists(os.path.join(out, store.MANIFEST)):
        return None
    base = OLD_DEFAULTS if preset == 'old' else DEFAULTS
    settings = {k: v for k, v in {**base, **overrides}.items() if k != 'views'}
    views = overrides.get('views', base['views'])
    wall, cpu = time.perf_counter(), time.process_time()
    build_inr_dataset('digits', views=views, out=out, progress=False, **settings)
    timing = dict(build_wall_s=time.perf_counter() - wall, build_cpu_s=time.process_time() - cpu)
    store.write_json(os.path.join(out, BUILD_TIME), timing)
    return timing


# --------------------------------------------------------------------------- #
# Features
# --------------------------------------------------------------------------- #

def load(root: str) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """The manifest and the three split records of a complete build."""
    manifest = store.read_manifest(root)
    return manifest, {s: store.read_split(root, s, manifest) for s in store.SPLITS}


def flat(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> np.ndarray:
    """``[B, num_params]``: every INR's weights and biases, layer by layer."""
    B = weights[0].shape[0]
    return torch.cat([t.reshape(B, -1) for pair in zip(weights, biases) for t in pair], 1).numpy()


def aligned(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
            ref: int = 0) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Every INR matched (permutations and signs) to INR ``ref``, all at once."""
    ws = [w.unsqueeze(-1) for w in weights]          # [B, d_out, d_in, 1]: stacked layer views
    bs = [b.unsqueeze(-1) for b in biases]           # [B, d_out, 1]
    matching = match_layers([w[ref] for w in ws], [b[ref] for b in bs], ws, bs, signs=True)
    ws, bs = apply_matching(ws, bs, matching)
    return [w[..., 0] for w in ws], [b[..., 0] for b in bs]


def features(manifest: Dict[str, Any], records: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Feature matrices per split and kind, labels per split, PSNR of every INR."""
    n = {s: records[s]['y'].numel() for s in store.SPLITS}
    weights = [torch.cat(ws) for ws in zip(*(records[s]['weights'] for s in store.SPLITS))]
    biases = [torch.cat(bs) for bs in zip(*(records[s]['biases'] for s in store.SPLITS))]
    # The stored last bias already holds the output offset: evaluate without adding it again.
    config = I.SirenConfig(layer_sizes=tuple(manifest['layer_sizes']),
                           **{**I.parse_convention(manifest['convention']), 'output_offset': 0.0})
    H, W = manifest['settings']['image_shape'][:2]
    with torch.no_grad():
        values = I.stacked_forward(weights, biases, I.grid(H, W), config)[..., 0].numpy()
        # Between the pixels: the INR on the grid with a point between every
        # two pixels, against the 8x8 digit upsampled bilinearly to that grid.
        finer = 2 * H - 1
        between = I.stacked_forward(weights, biases, I.grid(finer, 2 * W - 1), config)[..., 0]
        images, _, _ = load_source('digits', finer)
        object_id = torch.cat([records[s]['object_id'] for s in store.SPLITS])
        offgrid = I.psnr(between, images[object_id].reshape(len(object_id), -1), dim=[1]).double().numpy()
    full = dict(raw=flat(weights, biases), aligned=flat(*aligned(weights, biases)), function=values)
    cuts = np.cumsum([0] + [n[s] for s in store.SPLITS])
    out: Dict[str, Any] = {k: {s: m[cuts[i]:cuts[i + 1]] for i, s in enumerate(store.SPLITS)}
                           for k, m in full.items()}
    # The image each INR was fitted to, looked up by object id in one gather.
    pixels = {}
    for s in store.SPLITS:
        r = records[s]
        pos = torch.empty(int(r['image_object_id'].max()) + 1, dtype=torch.long)
        pos[r['image_object_id']] = torch.arange(r['image_object_id'].numel())
        pixels[s] = r['images'][pos[r['object_id']]].reshape(n[s], -1).numpy()
    out['pixels'] = pixels
    # The function values must reproduce the build's own PSNRs (conventions read right).
    target = np.concatenate([pixels[s] for s in store.SPLITS])
    psnr = torch.cat([records[s]['psnr'] for s in store.SPLITS]).double().numpy()
    again = 10 * np.log10(1 / ((values - target) ** 2).mean(1))
    if np.abs(again - psnr).max() > 0.1:
        raise SystemExit(f'the INRs evaluated here miss the build\'s PSNRs by up to '
                         f'{np.abs(again - psnr).max():.2f} dB: conventions misread')
    out['y'] = {s: records[s]['y'].numpy() for s in store.SPLITS}
    out['psnr'] = psnr
    out['offgrid_psnr'] = offgrid
    return out


# --------------------------------------------------------------------------- #
# Probe
# --------------------------------------------------------------------------- #

def probe(x: Dict[str, np.ndarray], y: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Standardised logistic regression: C with the best validation accuracy
    (the smaller C on ties), its validation and test accuracy (%)."""
    scaler = StandardScaler().fit(x['train'])
    xs = {s: scaler.transform(v) for s, v in x.items()}
    best = None
    for C in C_GRID:
        model = LogisticRegression(C=C, max_iter=2000).fit(xs['train'], y['train'])
        val = 100.0 * float((model.predict(xs['val']) == y['val']).mean())
        if best is None or val > best[1]:
            best = (C, val, model)
    C, val, model = best
    return dict(C=C, val=val, test=100.0 * float((model.predict(xs['test']) == y['test']).mean()))


def score(root: str) -> Dict[str, Any]:
    """One table row: the build's settings, timing (if known), PSNR, probes."""
    manifest, records = load(root)
    t0 = time.perf_counter()
    f = features(manifest, records)
    features_s = time.perf_counter() - t0
    settings = manifest['settings']
    row: Dict[str, Any] = dict(
        build=root, init=settings['init'], w0=settings['w0'], output_offset=settings['output_offset'],
        grid=settings['grid'], views=settings['views'], steps=settings['steps'], lr=settings['lr'],
        target_psnr=settings['target_psnr'], num_inrs={s: int(f['y'][s].size) for s in store.SPLITS},
        mean_steps=float(torch.cat([records[s]['steps'] for s in store.SPLITS]).double().mean()),
        psnr_mean=float(f['psnr'].mean()), psnr_min=float(f['psnr'].min()),
        offgrid_psnr_mean=float(f['offgrid_psnr'].mean()), features_s=features_s)
    timing_path = os.path.join(root, BUILD_TIME)
    if os.path.exists(timing_path):
        with open(timing_path) as fh:
            row.update(json.load(fh))
    for kind in FEATURES:
        row[kind] = probe(f[kind], f['y'])
    return row


def print_row(row: Dict[str, Any]) -> None:
    """One line of the table: settings, build wall/CPU s, mean steps, PSNR
    (mean, min, between the pixels), test accuracy and chosen C per feature set."""
    wall = row.get('build_wall_s')
    cpu = row.get('build_cpu_s')
    setting = (f'{row["init"]} w0={row["w0"]:g} steps={row["steps"]} lr={row["lr"]:g} '
               f'stop={row["target_psnr"]}')
    build_s = '-' if wall is None else f'{wall:.0f}/{cpu:.0f}'
    probes = ' '.join(f'{row[k]["test"]:5.1f}% (C={row[k]["C"]:g})' for k in FEATURES)
    print(f'{row["build"]:<22} {setting:<46} {build_s:>9} {row["mean_steps"]:6.0f} '
          f'{row["psnr_mean"]:5.1f} {row["psnr_min"]:5.1f} {row["offgrid_psnr_mean"]:5.1f}  {probes}',
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('builds', nargs='+', help='build directories to score')
    p.add_argument('--build', action='store_true', help='build directories that hold no build first')
    p.add_argument('--preset', choices=('defaults', 'old'), default='defaults',
                   help='settings to build with: the digits defaults, or those before the DWSNets preset')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override one build setting (repeatable), e.g. --set steps=300 --set target_psnr=none')
    args = p.parse_args()
    bad = [item for item in args.set if '=' not in item]
    if bad:
        p.error(f'--set takes KEY=VALUE, got {bad}')
    overrides = {k: parse_value(v) for k, v in (item.split('=', 1) for item in args.set)}

    print(f'{"build":<22} {"settings":<46} {"wall/cpu":>9} {"steps":>6} {"PSNR":>5} {"min":>5} {"off":>5}  '
          f'logistic regression test accuracy: ' + ', '.join(FEATURES))
    rows = []
    for root in args.builds:
        if args.build:
            build(root, args.preset, overrides)
        rows.append(score(root))
        print_row(rows[-1])
    print(json.dumps(dict(benchmark='digits_weight_signal', c_grid=list(C_GRID), rows=rows)))


if __name__ == '__main__':
    main()
