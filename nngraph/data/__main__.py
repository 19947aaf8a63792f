"""Command line: ``python -m nngraph.data build | merge | show``.

::

    python -m nngraph.data build digits --views 4 --out data/digits
    python -m nngraph.data build fashion-mnist          # FMNIST-INR -> ~/.cache/nngraph/fashion-mnist
    python -m nngraph.data build fashion-mnist --workers 2   # two processes, one complete build
    torchrun --nproc-per-node 4 -m nngraph.data build fashion-mnist   # rank r fits slice r/4, rank 0 writes
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m nngraph.data build fashion-mnist --out /shared/fmnist      # several machines, one shared out
    python -m nngraph.data build digits --views 4 --out data/digits --shard 0/4   # by hand: x4, anywhere
    python -m nngraph.data merge data/digits            # ... then joined
    python -m nngraph.data show data/digits            # -> data/digits/figure.png
    python -m nngraph.data convert SRC --format nfn --out DIR   # a published dataset, read once

``--workers N`` fits the ``N`` slices of the build in ``N`` processes of this
machine (``--threads`` each) and writes the same complete build as one
process, bit for bit; a rerun after an interruption resumes. Under torchrun
(``RANK`` and ``WORLD_SIZE`` set) every rank fits its slice, each with its
own ``--workers`` if given, and rank 0 writes the build once all have
finished; ``out`` must be one filesystem for every rank. ``--shard`` is for
slices run by hand and goes with neither.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Union

from nngraph.data.build import DATA_ROOT_ENV, build_inr_dataset, merge_shards
from nngraph.data.sources import SOURCES
from nngraph.inr import INITS

BUILD_SETTINGS = ('val_views', 'test_views', 'val_fraction', 'test_fraction', 'grid', 'hidden', 'w0',
                  'first_w0', 'init', 'output_offset', 'steps', 'lr', 'target_psnr', 'chunk_size')


def _optional_float(text: str) -> Optional[float]:
    return None if text.lower() == 'none' else float(text)


def _optional_int(text: str) -> Optional[int]:
    return None if text.lower() == 'none' else int(text)


def _objects_per_class(text: str) -> Union[int, Dict[str, int]]:
    """``'50'`` or ``'train=50,val=10'``."""
    if '=' not in text:
        return int(text)
    pairs = [p.split('=', 1) for p in text.split(',')]
    if any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f'write K or split=K,split=K; got {text!r}')
    return {k.strip(): int(v) for k, v in pairs}


def under_torchrun() -> bool:
    """Whether this process is one of torchrun's (``RANK`` and ``WORLD_SIZE`` set)."""
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line on ``argv``; returns the exit status (2 on a clear error)."""
    parser = argparse.ArgumentParser(prog='python -m nngraph.data', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    b = sub.add_parser('build', help='fit a multi-view INR dataset (or one shard of it)',
                       description='Settings left out take the source\'s defaults '
                                   '(nngraph.data.build.defaults_for).')
    b.add_argument('source', help=f'built-in source ({", ".join(SOURCES)})')
    b.add_argument('--out', default=None,
                   help=f'dataset directory (default ${DATA_ROOT_ENV} or ~/.cache/nngraph, then SOURCE)')
    b.add_argument('--source-dir', default=None,
                   help='directory of the idx files (fashion-mnist, mnist); default the '
                        'NNGRAPH_FASHION_MNIST_DIR / NNGRAPH_MNIST_DIR variable, else the Debian path')
    b.add_argument('--views', type=int, default=None, help='INRs per training image')
    b.add_argument('--seed', type=int, default=0)
    b.add_argument('--limit', type=int, default=None, help='use only N images (smoke runs)')
    b.add_argument('--objects-per-class', type=_objects_per_class, default=None,
                   help='K (every split) or train=K,val=K,test=K: the first K images of each class')
    b.add_argument('--views-objects-per-class', type=int, default=None,
                   help='give all --views only to the first M training images of each class')
    # Build settings: absent means the source's default, so none has a default here.
    opt = dict(default=argparse.SUPPRESS)
    b.add_argument('--val-views', type=int, **opt)
    b.add_argument('--test-views', type=int, **opt)
    b.add_argument('--val-fraction', type=float, **opt, help='stratified splits only')
    b.add_argument('--test-fraction', type=float, **opt, help='stratified splits only')
    b.add_argument('--grid', type=_optional_int, **opt, help='resize images to GRID x GRID ("none": native)')
    b.add_argument('--hidden', type=int, nargs='+', **opt)
    b.add_argument('--w0', type=float, **opt)
    b.add_argument('--first-w0', type=_optional_float, **opt)
    b.add_argument('--init', choices=INITS, **opt, help='initialisation preset')
    b.add_argument('--output-offset', type=float, **opt)
    b.add_argument('--steps', type=int, **opt)
    b.add_argument('--lr', type=float, **opt)
    b.add_argument('--target-psnr', type=_optional_float, **opt,
                   help='per-INR early stop in dB ("none" to always use all steps)')
    b.add_argument('--chunk-size', type=int, **opt)
    b.add_argument('--shard', default=None, help='i/n: fit only the i-th of n slices (join them with merge)')
    b.add_argument('--workers', type=int, default=None,
                   help='fit in N processes of this machine (each --threads threads), then write the '
                        'complete build (default 1: this process)')
    b.add_argument('--device', default=None, help='cpu (default), cuda (under torchrun: cuda:LOCAL_RANK), ...')
    b.add_argument('--threads', type=int, default=1,
                   help='CPU threads while fitting, per worker (0: torch default)')
    b.add_argument('--overwrite', action='store_true', help='rebuild over other settings')
    b.add_argument('--quiet', action='store_true', help='no progress bars')

    m = sub.add_parser('merge', help='join the shards in DIR/shards into a complete build')
    m.add_argument('dir')

    c = sub.add_parser('convert', help='read a published INR dataset once into the nngraph format')
    c.add_argument('src', help='the published dataset directory')
    c.add_argument('--format', required=True, choices=('dwsnets', 'neural-graphs', 'nfn'))
    c.add_argument('--out', required=True)
    c.add_argument('--splits-file', default=None, help='DWSNets / neural-graphs splits JSON')
    c.add_argument('--prefix', default=None, help='NFN folder prefix (randinit_smaller)')
    c.add_argument('--split-points', type=int, nargs=2, default=None, help='NFN: train/val and val/test')

    s = sub.add_parser('show', help='save the figure: originals vs INRs, PSNR histogram')
    s.add_argument('dir')
    s.add_argument('--out', default=None, help='PNG path (default DIR/figure.png)')
    s.add_argument('--split', default='test', choices=('train', 'val', 'test'))
    s.add_argument('--per-class', type=int, default=1)

    args = parser.parse_args(argv)
    try:
        if args.command == 'build':
            settings = {k: v for k, v in vars(args).items() if k in BUILD_SETTINGS}
            path = build_inr_dataset(
                args.source, views=args.views, out=args.out, seed=args.seed, limit=args.limit,
                source_dir=args.source_dir, shard=args.shard, workers=args.workers,
                distributed=under_torchrun(), overwrite=args.overwrite,
                objects_per_class=args.objects_per_class,
                views_objects_per_class=args.views_objects_per_class,
                device=args.device, threads=args.threads or None, progress=not args.quiet,
                **settings)
        elif args.command == 'merge':
            path = merge_shards(args.dir)
        elif args.command == 'convert':
            from nngraph.data.published import convert_published
            opts = {k: v for k, v in (('splits_file', args.splits_file), ('prefix', args.prefix),
                                      ('split_points', args.split_points)) if v is not None}
            path = convert_published(args.src, args.format, args.out, **opts)
        else:
            from nngraph.data.show import show
            path = show(args.dir, args.out, split=args.split, per_class=args.per_class)
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
