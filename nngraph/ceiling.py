r"""The ceiling of weight-space classification: a small CNN on what the INRs hold (issue 20).

A weight-space model reads an INR's weights and names the class of the image
the INR represents. How well could any model do? Two rows answer it, each a
small CNN (:class:`SmallCNN`) trained on the training split, its epoch
selected on validation, tested on test:

``renderings``
    every INR of each split evaluated on the grid it was fitted on: exactly
    the information its weights hold about the image, as pixels. Values are
    clamped to ``[0, 1]``, the range of every image the INRs were fitted to
    (sources are in ``[0, 1]`` and :func:`nngraph.data.sources.resize`
    clamps), as showing or saving the rendering as an image would: outside it
    lies only fitting error, which no image holds.
``images``
    the source images of the same objects, in the same order, resized to the
    build's grid: what the INRs were fitted to, so the gap between the two rows
    is what fitting lost. Every build's split files keep these images (the
    source resized to the build's grid, per object id), so no source needs to
    be on this machine; a build without them (a converted published dataset,
    whose object ids are positions in the published lists) is refused. An
    object with several views (INRs) comes once per view, so both rows train
    on the same list of (object, label) pairs and take the same steps per epoch.

``--source NAME`` (``fashion-mnist`` or ``mnist``) reads the ``images`` row of
a source with a fixed split straight from its idx files, with no build: the
split every build of that source uses (:func:`nngraph.data.build.fixed_splits`;
Fashion-MNIST's published FMNIST-INR split, 55,000 / 5,000 / 10,000), at the
native grid, one image per object.

::

    python -m nngraph.ceiling data/digits --input renderings --seeds 0 1 2 --out c.json
    python -m nngraph.ceiling ~/.cache/nngraph/fmnist-study --input images --epochs 20
    python -m nngraph.ceiling --source fashion-mnist --input images

The JSON holds every seed's selected epoch and train / val / test accuracy
(fractions), its wall time, the mean and std (ddof 1) over seeds, the data
(grid, split sizes), the machine and the command. Threads: torch's setting
(``OMP_NUM_THREADS``), or ``--threads``.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import shlex
import statistics
import sys
import time
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nngraph import inr as I
from nngraph.data import store

__all__ = ['INPUTS', 'render', 'load_inputs', 'SmallCNN', 'train_cnn', 'ceiling', 'main']

INPUTS = ('renderings', 'images')
# Sources that can be read without a build: those with a fixed split.
SOURCE_ONLY = ('fashion-mnist', 'mnist')


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #

def render(weights: Sequence[Tensor], biases: Sequence[Tensor], convention: str, shape: Sequence[int], *,
           chunk: int = 512, clamp: bool = True, progress: bool = False) -> Tensor:
    """Every INR evaluated on its ``H x W`` pixel grid (:func:`nngraph.inr.grid`,
    the grid a build fits on): ``[N, C, H, W]``.

    Args:
        weights, biases: stacked parameters, ``[N, d_{l+1}, d_l]`` and
            ``[N, d_{l+1}]``, the output offset folded into the last bias (as
            builds store them).
        convention: the SIREN conventions string (:func:`nngraph.inr.parse_convention`).
        shape: ``(H, W)`` or ``(H, W, C)``.
        chunk: INRs per batched forward (bounds the ``[chunk, H W, d]`` activations).
        clamp: clamp to ``[0, 1]``, the range of the fitted images.
        progress: a tqdm bar over the INRs.
    """
    from tqdm.auto import tqdm
    conv = I.parse_convention(convention)
    H, W = int(shape[0]), int(shape[1])
    sizes = (weights[0].shape[2], *(w.shape[1] for w in weights))
    # The offset is already in the last bias: stacked_forward must not add it again.
    config = I.SirenConfig(layer_sizes=sizes, w0=conv['w0'], first_w0=conv['first_w0'], output_offset=0.0)
    coords = I.grid(H, W, dtype=weights[0].dtype)
    N, C = weights[0].shape[0], sizes[-1]
    out = torch.empty(N, C, H, W, dtype=weights[0].dtype)
    with torch.no_grad(), tqdm(total=N, desc='rendering INRs', unit='INR', disable=not progress) as bar:
        for a in range(0, N, int(chunk)):        # chunks of INRs, each one batched forward
            b = min(a + int(chunk), N)
            y = I.stacked_forward([w[a:b] for w in weights], [v[a:b] for v in biases], coords, config)
            out[a:b] = y.transpose(1, 2).reshape(b - a, C, H, W)
            bar.update(b - a)
    return out.clamp_(0.0, 1.0) if clamp else out


def _not_a_build(root: str, why: str) -> ValueError:
    return ValueError(f'{root!r} is not an INR build ({why}); pass a folder written by '
                      f'python -m nngraph.data build, or --source NAME for the images of a source')


def _read_build(root: str) -> Dict[str, Any]:
    try:
        manifest = store.read_manifest(root)
    except (FileNotFoundError, ValueError) as err:
        raise _not_a_build(root, str(err)) from None
    shape = manifest.get('settings', {}).get('image_shape')
    if not shape:
        raise ValueError(f'the INR dataset in {root!r} (source {manifest.get("settings", {}).get("source")!r}) '
                         f'records no grid (settings.image_shape): a converted published dataset; '
                         f'its INRs cannot be rendered on the grid they were fitted on')
    return manifest


def _from_build(root: str, input: str, chunk: int, progress: bool) -> Dict[str, Any]:
    manifest = _read_build(root)
    settings = manifest['settings']
    shape = [int(v) for v in settings['image_shape']]
    splits: Dict[str, Dict[str, Tensor]] = {}
    for s in store.SPLITS:
        rec = store.read_split(root, s, manifest)
        object_id, y = rec['object_id'].long(), rec['y'].long()
        if input == 'renderings':
            x = render(rec['weights'], rec['biases'], rec['convention'], shape, chunk=chunk, progress=progress)
        else:
            images, ids = rec['images'], rec['image_object_id'].long()
            if images.numel() == 0 and object_id.numel():
                raise ValueError(
                    f'the {s} split of {root!r} holds no source images (its images are empty; source '
                    f'{settings.get("source")!r}): a converted published dataset, whose object ids are '
                    f'positions in the published split lists, not images of a source on this machine')
            # The row of each INR's object among the split's images (both sorted by object id).
            row = torch.searchsorted(ids, object_id).clamp_(max=max(ids.numel() - 1, 0))
            if object_id.numel() and not torch.equal(ids[row], object_id):
                missing = int(object_id[ids[row] != object_id][0])
                raise ValueError(f'the {s} split of {root!r} has an INR of object {missing} but no image '
                                 f'of it among its images')
            x = images[row].permute(0, 3, 1, 2).contiguous()                  # [N, C, H, W]
        splits[s] = dict(x=x, y=y, object_id=object_id, view_id=rec['view_id'].long())
    return dict(splits=splits, root=root, source=settings.get('source'), shape=shape,
                num_classes=int(manifest['num_classes']))


def _from_source(name: str, source_dir: Optional[str]) -> Dict[str, Any]:
    from nngraph.data.build import defaults_for, fixed_splits
    from nngraph.data.sources import load_idx_source, resize
    if name not in SOURCE_ONLY:
        raise ValueError(f'--source {name!r} has no fixed split to read without a build; choose one of '
                         f'{SOURCE_ONLY}, or pass the folder of a build')
    try:
        raw, labels, num_train = load_idx_source(name, source_dir)
    except FileNotFoundError as err:
        raise ValueError(f'the source images are not on this machine: {err}') from None
    defaults = defaults_for(name)
    images = resize(raw, defaults['grid'])
    # The split a default build of this source uses (seed 0).
    split = fixed_splits(name, num_train, labels.numel(), labels, 0, defaults.get('val_fraction', 0.0))
    splits = {s: dict(x=images[ids].permute(0, 3, 1, 2).contiguous(), y=labels[ids], object_id=ids,
                      view_id=torch.zeros_like(ids)) for s, ids in split.items()}
    return dict(splits=splits, root=None, source=name, shape=list(images.shape[1:]),
                num_classes=int(labels.max()) + 1)


def load_inputs(root: Union[str, os.PathLike, None] = None, input: str = 'renderings', *,
                source: Optional[str] = None, source_dir: Optional[str] = None, chunk: int = 512,
                progress: bool = False) -> Dict[str, Any]:
    """The CNN's inputs: ``{'splits': {split: {'x' [N, C, H, W] in [0, 1], 'y',
    'object_id', 'view_id'}}, 'shape', 'num_classes', 'root', 'source'}``.

    From a build (``root``): one item per INR, in the split file's order (object
    by object, view by view), as renderings or as the image of its object (the
    module docstring). From ``source`` (no build): the images of the source's
    fixed split, one per object.

    Raises:
        ValueError: an unknown ``input``; ``root`` and ``source`` both or neither
            given; ``root`` not a complete INR build; a build that records no grid
            or holds no source images; ``renderings`` asked of a source; a source
            without a fixed split, or whose files are not on this machine (named).
    """
    if input not in INPUTS:
        raise ValueError(f'unknown --input {input!r}; choose one of {INPUTS}')
    if (root is None) == (source is None):
        raise ValueError('name one of a build folder (ROOT) or --source, not both or neither')
    if source is not None:
        if input == 'renderings':
            raise ValueError('renderings need the INRs of a build: pass its folder (ROOT) instead of --source')
        return _from_source(source, source_dir)
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise _not_a_build(root, 'not a folder')
    return _from_build(root, input, chunk, progress)


# --------------------------------------------------------------------------- #
# The CNN
# --------------------------------------------------------------------------- #

class SmallCNN(nn.Module):
    """Two 3x3 convolution blocks (``channels`` wide, ReLU, 2x2 max-pool), one
    hidden fully connected layer with dropout, and the class logits.

    Args:
        in_channels, height, width: the images' shape (at least 4x4).
        num_classes: logits out.
        channels: widths of the two convolution blocks.
        hidden: width of the fully connected layer.
        dropout: dropout before the logits.
    """

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int,
                 channels: Sequence[int] = (32, 64), hidden: int = 128, dropout: float = 0.5) -> None:
        super().__init__()
        if height < 4 or width < 4:
            raise ValueError(f'SmallCNN needs images of at least 4x4 pixels (two 2x2 poolings), '
                             f'got {height}x{width}')
        c1, c2 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * (height // 4) * (width // 4), hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        self.settings = dict(channels=[c1, c2], hidden=int(hidden), dropout=float(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, num_classes]``."""
        return self.head(self.features(x))


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, device) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for a in range(0, x.shape[0], batch_size):
            pred = model(x[a:a + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[a:a + batch_size]).sum())
    return correct / max(1, x.shape[0])


def train_cnn(data: Dict[str, Any], seed: int = 0, *, epochs: int = 15, batch_size: int = 128,
              lr: float = 1e-3, device: Union[str, torch.device] = 'cpu', progress: bool = True) -> Dict[str, Any]:
    """Trains a :class:`SmallCNN` on ``data['splits']['train']`` (:func:`load_inputs`):
    Adam, cosine schedule over every step, cross-entropy; inputs standardised
    by the training inputs' mean and std. The epoch of highest validation
    accuracy (the first, on ties) is selected and tested.

    Seeded: ``seed`` fixes the initialisation, the dropout masks and the order
    of the minibatches.

    Returns:
        ``seed``, ``best_epoch`` (1-based), ``train_acc`` / ``val_acc`` /
        ``test_acc`` of the selected model (fractions), ``val_acc_per_epoch``,
        ``wall_time_s``.
    """
    from tqdm.auto import tqdm
    if int(epochs) < 1:
        raise ValueError(f'epochs must be at least 1, got {epochs}')
    start = time.time()
    sp = data['splits']
    tr = sp['train']
    if tr['x'].shape[0] == 0:
        raise ValueError('the train split is empty: nothing to train on')
    mean, std = float(tr['x'].mean()), float(tr['x'].std())
    xs = {s: (sp[s]['x'] - mean) / (std if std > 0 else 1.0) for s in store.SPLITS}
    torch.manual_seed(int(seed))
    order = torch.Generator().manual_seed(int(seed))
    C, H, W = tr['x'].shape[1:]
    model = SmallCNN(C, H, W, int(data['num_classes'])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = tr['x'].shape[0]
    steps = math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs) * steps)
    best, best_epoch, best_state, history = -1.0, 0, None, []
    for epoch in range(int(epochs)):
        model.train()
        perm = torch.randperm(n, generator=order)
        bar = tqdm(range(steps), desc=f'seed {seed} epoch {epoch + 1}/{epochs}', unit='batch',
                   disable=not progress, leave=False)
        for k in bar:                            # minibatches, not samples
            idx = perm[k * batch_size:(k + 1) * batch_size]
            loss = F.cross_entropy(model(xs['train'][idx].to(device)), tr['y'][idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if k % 20 == 0:
                bar.set_postfix(loss=f'{loss.item():.3f}')
        val = _accuracy(model, xs['val'], sp['val']['y'], 1024, device)
        history.append(val)
        if val > best:
            best, best_epoch, best_state = val, epoch + 1, copy.deepcopy(model.state_dict())
        if progress:
            tqdm.write(f'seed {seed} epoch {epoch + 1}: val {100 * val:.1f}%')
    model.load_state_dict(best_state)
    return dict(seed=int(seed), best_epoch=best_epoch,
                train_acc=_accuracy(model, xs['train'], tr['y'], 1024, device), val_acc=best,
                test_acc=_accuracy(model, xs['test'], sp['test']['y'], 1024, device),
                val_acc_per_epoch=history, wall_time_s=round(time.time() - start, 1))


# --------------------------------------------------------------------------- #
# The measurement
# --------------------------------------------------------------------------- #

def _machine() -> str:
    from nngraph.study import _machine as machine
    return machine()


def ceiling(root: Union[str, os.PathLike, None] = None, input: str = 'renderings', *,
            source: Optional[str] = None, source_dir: Optional[str] = None, seeds: Sequence[int] = (0,),
            epochs: int = 15, batch_size: int = 128, lr: float = 1e-3, device: Union[str, torch.device] = 'cpu',
            chunk: int = 512, progress: bool = True, command: Optional[str] = None) -> Dict[str, Any]:
    """:func:`load_inputs` then :func:`train_cnn` for every seed: the record
    ``python -m nngraph.ceiling`` writes (module docstring)."""
    start = time.time()
    data = load_inputs(root, input, source=source, source_dir=source_dir, chunk=chunk, progress=progress)
    prepare = time.time() - start
    runs = [train_cnn(data, s, epochs=epochs, batch_size=batch_size, lr=lr, device=device, progress=progress)
            for s in seeds]
    stats = {k: [r[k] for r in runs] for k in ('train_acc', 'val_acc', 'test_acc')}
    sp = data['splits']
    C, H, W = sp['train']['x'].shape[1:]
    probe = SmallCNN(C, H, W, data['num_classes'])
    return dict(
        input=input, root=data['root'], source=data['source'],
        data=dict(grid=[H, W], channels=C, num_classes=data['num_classes'],
                  clamp=[0.0, 1.0] if input == 'renderings' else None,
                  splits={s: dict(samples=int(v['y'].numel()), objects=int(v['object_id'].unique().numel()))
                          for s, v in sp.items()}),
        model=dict(name='SmallCNN', parameters=sum(p.numel() for p in probe.parameters()), **probe.settings),
        optim=dict(optimizer='Adam', lr=lr, schedule='cosine', epochs=int(epochs), batch_size=int(batch_size),
                   selection='best validation accuracy'),
        seeds=runs,
        mean={k: statistics.fmean(v) for k, v in stats.items()},
        std={k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in stats.items()},
        prepare_time_s=round(prepare, 1), wall_time_s=round(time.time() - start, 1),
        threads=torch.get_num_threads(), device=str(device), machine=_machine(), command=command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m nngraph.ceiling``; returns the exit status (2 on a refusal)."""
    parser = argparse.ArgumentParser(prog='python -m nngraph.ceiling', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', nargs='?', help='an INR build folder (data/digits, ~/.cache/nngraph/...)')
    parser.add_argument('--input', required=True, help=f'one of {", ".join(INPUTS)}')
    parser.add_argument('--source', help=f'images of a source without a build: {", ".join(SOURCE_ONLY)}')
    parser.add_argument('--source-dir', help='where the source\'s idx files are (default: as the builder)')
    parser.add_argument('--epochs', type=int, default=15)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (default: torch\'s setting)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--chunk', type=int, default=512, help='INRs per batched rendering')
    parser.add_argument('--out', help='write the JSON record here (atomically)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = 'python -m nngraph.ceiling ' + shlex.join(argv)
    try:
        record = ceiling(args.root, args.input, source=args.source, source_dir=args.source_dir, seeds=args.seeds,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
                         chunk=args.chunk, progress=not args.quiet, command=command)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.out:
        store.write_json(args.out, record)
    m, s = record['mean'], record['std']
    print(f"{args.input} ({record['root'] or record['source']}): test {100 * m['test_acc']:.1f} ± "
          f"{100 * s['test_acc']:.1f}%, val {100 * m['val_acc']:.1f}%, train {100 * m['train_acc']:.1f}% "
          f"over seeds {args.seeds}; {record['wall_time_s']:.0f} s" + (f' -> {args.out}' if args.out else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
