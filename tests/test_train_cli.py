"""train.py from the command line: config errors, every shipped config loads,
and a 2-process torchrun run on CPU."""
import glob
import json
import os
import subprocess
import sys

import pytest

from nngraph import training as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The public transform names of DESIGN.md: shipped configs may only use these.
PUBLIC_TRANSFORMS = {'RandomNeuronPermutation', 'RandomSignFlip', 'SirenBiasShift', 'SirenBiasFold',
                     'RandomPositiveScaling',
                     'InputRotation', 'InputTranslation', 'InputScaling', 'WeightNoise', 'WeightDropout',
                     'QuantileZeroing', 'LabelSmoothing', 'WeightMixUp', 'SelfAlignMixUp'}
TOY = ['data.source=toy', 'data.limit=32', 'data.batch_size=8', 'model.hidden=8', 'model.edge_hidden=8',
       'model.layers=1', 'model.out_dim=8', 'optim.epochs=2', 'device=cpu']


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='1')
    return env


# configs/study-*.yaml are study configs (tests/test_study.py loads them), not train.py configs.
TRAIN_CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '*.yaml'))
                       if not os.path.basename(p).startswith('study-'))


@pytest.mark.parametrize('path', TRAIN_CONFIGS)
def test_shipped_configs_load(path):
    cfg = T.load_config(path)
    names = {e if isinstance(e, str) else next(iter(e)) for e in cfg['transforms']}
    assert names <= PUBLIC_TRANSFORMS, names - PUBLIC_TRANSFORMS


def test_default_config_is_digits():
    cfg = T.load_config(os.path.join(ROOT, 'configs', 'digits.yaml'))
    assert cfg['data']['source'] == 'digits' and cfg['mode'] == 'supervised'
    # The default run demonstrates reading weights: no probe features (README says
    # what its accuracy comes from), and a sign-invariant encoder for the sine INRs:
    # sign-equivariant by construction, or the GNN on neurons in a canonical sign.
    assert cfg['model']['probe_points'] == 0
    assert cfg['model']['name'] == 'sign_gnn' or cfg['model']['canonical_signs'] in ('bias', 'out')


def test_cli_reports_unknown_key(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), f'out_dir={tmp_path}', 'optim.lrate=1'],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode != 0
    assert "unknown config key 'optim.lrate'" in r.stderr and "'lr'" in r.stderr


def test_overrides_on_both_sides_of_a_flag_are_all_read(tmp_path):
    # argparse's plain parse_args dropped the overrides after --quiet into an
    # 'unrecognized arguments' error: every one of them must reach the config
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), f'out_dir={tmp_path}', '--quiet',
                        'optim.lr=-1'], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert 'optim.lr must be a finite number > 0, got -1' in r.stderr and 'Traceback' not in r.stderr


@pytest.mark.slow
def test_torchrun_two_processes_cpu(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29517',
           os.path.join(ROOT, 'train.py'), '--quiet', f'out_dir={tmp_path}', 'name=ddp'] + TOY
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ['ddp']
    files = sorted(os.listdir(tmp_path / 'ddp'))
    assert files == ['checkpoint.pt', 'config.yaml', 'curves.png', 'metrics.json'], files
    m = json.loads((tmp_path / 'ddp' / 'metrics.json').read_text())
    assert m['finished'] and m['world_size'] == 2 and len(m['epochs']) == 2
    # Evaluation was reduced over both ranks: accuracies are multiples of 1/16 (16 val graphs).
    assert all(abs(h['val_acc'] * 16 - round(h['val_acc'] * 16)) < 1e-9 for h in m['epochs'])


def test_missing_fashion_mnist_build_names_the_build_command(tmp_path):
    # The shipped FMNIST configs read an existing build; they never start a fit.
    root = tmp_path / 'fmnist'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--quiet', '--config',
                        os.path.join(ROOT, 'configs', 'fmnist-statnn.yaml'), f'out_dir={tmp_path}',
                        f'data.root={root}'], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert r.returncode != 0 and not root.exists()
    assert f'python -m nngraph.data build fashion-mnist --out {root}' in r.stderr


@pytest.mark.slow
def test_the_readme_zoo_command_builds_the_zoo_and_trains_the_predictor(tmp_path):
    # configs/zoo-gnn.yaml as README runs it, on a zoo of 12 networks that
    # train.py builds itself because data.root holds none
    root = tmp_path / 'zoo'
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--quiet', '--config',
                        os.path.join(ROOT, 'configs', 'zoo-gnn.yaml'), f'out_dir={tmp_path}', f'data.root={root}',
                        'data.limit=12', 'optim.epochs=1', 'data.eval_batch_size=64', 'device=cpu'],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert (root / 'manifest.json').exists()
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert {'best_val_tau', 'test_tau', 'test_r2', 'test_mae'} <= set(summary)
    assert (tmp_path / 'zoo-gnn' / 'predictions.csv').exists() and (tmp_path / 'zoo-gnn' / 'curves.png').exists()


def test_train_py_builds_digits_with_two_worker_processes(tmp_path):
    # The spawned build workers import train.py as __mp_main__: its code must
    # sit behind the __main__ guard, or each worker would start a run of its own.
    # 60 digits with 4 training views are about 190 INRs: two chunks, two workers.
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--quiet', f'out_dir={tmp_path}',
                        'name=w2', f'data.root={tmp_path}/digits', 'data.limit=60', 'data.build_views=4',
                        'data.views=1', 'data.build_workers=2', 'model.hidden=8', 'model.edge_hidden=8',
                        'model.layers=1', 'model.out_dim=8', 'optim.epochs=1', 'device=cpu'],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('run w2 (supervised)') == 1, r.stdout
    assert json.loads((tmp_path / 'w2' / 'metrics.json').read_text())['finished']
    assert json.loads((tmp_path / 'digits' / 'manifest.json').read_text())['splits']['train']['num_inrs'] > 0
