"""Train a weight-space model on parameter graphs.

    python train.py                                   # configs/digits.yaml
    python train.py --config configs/permutation.yaml optim.epochs=20 model.hidden=128
    torchrun --nproc_per_node=2 train.py --config configs/digits.yaml
    python train.py --resume optim.epochs=25          # continue runs/digits/, ten more epochs

Reads the YAML config top to bottom (every key is listed with its default in
nngraph.training.DEFAULTS), applies `key.sub=value` overrides, and writes
runs/<name>/: config.yaml, metrics.json, checkpoint.pt, curves.png.
--resume continues the run only under the config its checkpoint was made
with (execution keys such as compile and device aside; optim.epochs may
grow). The stages themselves live in nngraph/training/ (one module per stage).
"""
import argparse
import json
import os
import sys

from nngraph import training


def main() -> None:
    # ------------------------------------------------------------------------- config
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         'configs', 'digits.yaml'))
    parser.add_argument('--resume', action='store_true', help='continue the run in runs/<name>/')
    parser.add_argument('--overwrite', action='store_true', help='start runs/<name>/ over')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    parser.add_argument('overrides', nargs='*', help='key.sub=value (value read as YAML)')
    # intermixed: `train.py optim.lr=1e-3 --resume seed=2` reads both overrides, not only the first run
    args = parser.parse_intermixed_args()

    try:
        config = training.load_config(args.config, args.overrides)
    except (ValueError, OSError) as err:
        sys.exit(f'config error: {err}')

    rank = int(os.environ.get('RANK', '0'))
    if rank == 0:
        print(f"run {config['name']} ({config['mode']}) -> {os.path.join(config['out_dir'], config['name'])}")

    # ------------------------------------------------------------------------- train, evaluate, save
    # data (built if absent), model, AdamW + warmup/cosine, the epoch loop with
    # validation-based selection, the final test evaluation and the run folder
    # are all in training.run, in that order.
    # A refusal (a run folder in the way, a resume from another config or a
    # damaged checkpoint, a diverged loss, a missing build) is one line, no traceback.
    try:
        metrics = training.run(config, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except training.RunExistsError as err:
        sys.exit(str(err))
    except ValueError as err:
        sys.exit(f'error: {err}')

    # ------------------------------------------------------------------------- report
    if rank == 0:
        summary = {k: metrics[k] for k in ('best_epoch', 'best_val_acc', 'test_acc', 'best_val_tau', 'test_tau',
                                            'test_r2', 'test_mae', 'wall_time_s', 'train_graphs_per_s')
                   if metrics.get(k) is not None}
        for key in ('probe', 'probe_random_encoder'):
            if key in metrics:
                summary[key + '_test_acc'] = metrics[key]['test_acc']
        print(json.dumps(summary))


# A function behind the guard, not top-level code: the processes that
# data.build_workers spawns import this file (as __mp_main__) and must not run it.
if __name__ == '__main__':
    main()
