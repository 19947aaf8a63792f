"""The figure of a built INR dataset: originals beside their INRs' reconstructions,
and the PSNR histogram of every split."""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

from nngraph._atomic import atomic_path
from nngraph.data import store
from nngraph.inr import SirenConfig, grid, parse_convention, stacked_forward

__all__ = ['show']


def show(root: Union[str, os.PathLike], path: Optional[Union[str, os.PathLike]] = None, *,
         split: str = 'test', per_class: int = 1, dpi: int = 120) -> str:
    """Saves a PNG (atomically) with, for ``per_class`` objects of each class of
    ``split``, the original image above its view-0 INR evaluated on the pixel
    grid (with its PSNR) and on a 4x finer grid, and below, the PSNR
    histogram of every split.

    Args:
        root: a complete build (:func:`nngraph.data.build_inr_dataset`).
        path: where to save (default ``root/figure.png``).
        split: the split whose objects are drawn.
        per_class: objects drawn per class.
        dpi: resolution.

    Returns:
        The path of the PNG.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    root = os.fspath(root)
    manifest = store.read_manifest(root)
    path = os.path.join(root, 'figure.png') if path is None else os.fspath(path)
    records = {s: store.read_split(root, s, manifest) for s in store.SPLITS}
    rec = records[split]
    if rec['y'].numel() == 0:
        raise ValueError(f'split {split!r} of {root!r} is empty: nothing to show')
    if rec['images'].numel() == 0:
        raise ValueError(f'{root!r} stores no images (converted from a published dataset): '
                         f'nothing to compare the INRs with')

    # Pick view 0 of the first `per_class` objects of each class.
    first = (rec['view_id'] == 0).nonzero().squeeze(1)
    picks = []
    for c in torch.unique(rec['y'][first]).tolist():   # a loop over classes
        picks.extend(first[rec['y'][first] == c][:per_class].tolist())
    picks = torch.tensor(picks)
    H, W, C = rec['images'].shape[1:]
    weights = [w[picks] for w in rec['weights']]
    biases = [b[picks] for b in rec['biases']]
    # Evaluate with the recorded w0s; the output offset is already in the last bias.
    conv = parse_convention(rec['convention'])
    config = SirenConfig(layer_sizes=tuple(rec['layer_sizes']), w0=conv['w0'], first_w0=conv['first_w0'])
    with torch.no_grad():
        recon = stacked_forward(weights, biases, grid(H, W), config).reshape(-1, H, W, C)
        # Between the pixels the INR is free: show it on a 4x finer grid too.
        fine = stacked_forward(weights, biases, grid(4 * H, 4 * W), config).reshape(-1, 4 * H, 4 * W, C)
    pos = {int(o): k for k, o in enumerate(rec['image_object_id'].tolist())}
    originals = rec['images'][[pos[int(o)] for o in rec['object_id'][picks].tolist()]]

    n = len(picks)
    fig = plt.figure(figsize=(max(1.1 * n, 6), 6.4))
    gs = fig.add_gridspec(4, n, height_ratios=[1, 1, 1, 1.6])
    cmap = 'gray' if C == 1 else None
    for k in range(n):
        for row, img, title in ((0, originals[k], f'y={int(rec["y"][picks[k]])}'),
                                (1, recon[k].clamp(0, 1), f'{float(rec["psnr"][picks[k]]):.1f} dB'),
                                (2, fine[k].clamp(0, 1), '4x grid')):
            ax = fig.add_subplot(gs[row, k])
            ax.imshow(img.squeeze(-1).numpy() if C == 1 else img.numpy(), cmap=cmap, vmin=0, vmax=1,
                      interpolation='nearest')
            ax.set_title(title, fontsize=7)
            ax.axis('off')
    ax = fig.add_subplot(gs[3, :])
    for s, r in records.items():
        if r['psnr'].numel():
            # Densities, so the small val/test splits stay visible beside train.
            ax.hist(r['psnr'].numpy(), bins=40, density=True, histtype='step', linewidth=1.5,
                    label=f'{s}: {r["psnr"].numel()} INRs, mean {float(r["psnr"].mean()):.1f} dB, '
                          f'min {float(r["psnr"].min()):.1f} dB')
    ax.set_xlabel('PSNR (dB) of every INR on its pixel grid')
    ax.set_ylabel('density')
    ax.legend(fontsize=7)
    s = manifest['settings']
    fig.suptitle(f'{s["source"]}-INR: {"-".join(map(str, rec["layer_sizes"]))} SIRENs, '
                 f'{rec["convention"]}, {s["views"]} train views', fontsize=8)
    fig.tight_layout(rect=(0.02, 0, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format='png')
    plt.close(fig)
    return path
