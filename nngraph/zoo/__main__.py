"""Command line: ``python -m nngraph.zoo build | merge | show``.

::

    python -m nngraph.zoo build digits                       # -> ~/.cache/nngraph/zoo-digits
    python -m nngraph.zoo build digits --networks 200 --root data/zoo
    python -m nngraph.zoo build digits --root data/zoo --shard 0/4   # x4, side by side
    python -m nngraph.zoo merge data/zoo
    python -m nngraph.zoo show data/zoo                      # counts and the accuracy spread
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from nngraph.data.workspace import DATA_ROOT_ENV
from nngraph.zoo.build import build_zoo, merge_zoo_shards, read_manifest
from nngraph.zoo.plan import SOURCES


def _pair(text: str) -> List[float]:
    """``'1e-4,3e-2'`` -> ``[1e-4, 3e-2]``."""
    try:
        return [float(v) for v in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'write LOW,HIGH (e.g. 1e-4,3e-2); got {text!r}') from None


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line on ``argv``; returns the exit status (2 on a clear error)."""
    parser = argparse.ArgumentParser(prog='python -m nngraph.zoo', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    b = sub.add_parser('build', help='train a zoo of MLP classifiers (or one shard of it)',
                       description="Settings left out take the source's defaults (nngraph.zoo.defaults_for).")
    b.add_argument('source', help=f'{" or ".join(SOURCES)}')
    b.add_argument('--root', default=None,
                   help=f'zoo directory (default ${DATA_ROOT_ENV} or ~/.cache/nngraph, then zoo-SOURCE)')
    b.add_argument('--source-dir', default=None, help='directory of the idx files (fashion-mnist)')
    b.add_argument('--seed', type=int, default=0)
    opt = dict(default=argparse.SUPPRESS)        # absent: the source's default
    b.add_argument('--networks', type=int, **opt)
    b.add_argument('--depths', type=int, nargs='+', **opt)
    b.add_argument('--widths', type=int, nargs='+', **opt)
    b.add_argument('--activations', nargs='+', **opt)
    b.add_argument('--epochs', type=int, nargs='+', **opt, help='epoch budgets to choose from')
    for name in ('lr', 'weight-decay', 'init-scale', 'label-noise', 'train-fraction'):
        b.add_argument(f'--{name}', type=_pair, **opt, help='LOW,HIGH')
    for name in ('batch-size', 'chunk-size', 'train-images', 'test-images', 'pool'):
        b.add_argument(f'--{name}', type=int, **opt)
    b.add_argument('--test-fraction', type=float, **opt, help='digits: the stratified test share')
    b.add_argument('--shard', default=None, help='i/n: train only the i-th of n slices')
    b.add_argument('--threads', type=int, default=1, help='CPU threads (0: torch default)')
    b.add_argument('--overwrite', action='store_true', help='rebuild from scratch')
    b.add_argument('--quiet', action='store_true', help='no progress bar')
    m = sub.add_parser('merge', help='join the shards in DIR/shards into a complete zoo')
    m.add_argument('dir')
    s = sub.add_parser('show', help="print a zoo's manifest summary")
    s.add_argument('dir')

    args = parser.parse_args(argv)
    fixed = ('command', 'source', 'root', 'source_dir', 'seed', 'shard', 'threads', 'overwrite', 'quiet')
    try:
        if args.command == 'build':
            settings = {k: v for k, v in vars(args).items() if k not in fixed}
            path = build_zoo(args.source, args.root, args.seed, source_dir=args.source_dir, shard=args.shard,
                             overwrite=args.overwrite, threads=args.threads or None, progress=not args.quiet,
                             **settings)
        elif args.command == 'merge':
            path = merge_zoo_shards(args.dir)
        else:
            man = read_manifest(args.dir)
            print(json.dumps({k: man[k] for k in ('networks', 'checkpoints', 'final_test_acc', 'architectures')},
                             indent=1))
            return 0
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
