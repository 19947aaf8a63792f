"""nngraph.training.config: every value is checked before anything is
created, one line naming the key, the value and what is expected (issue 19,
row 10); the execution keys --resume and the study go by."""
import os
import re
import subprocess
import sys

import pytest

from nngraph import training as T
from nngraph.training import config as C

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Issue 19, row 10, and more of each kind: (override, text the one-line message holds).
BAD = [
    ('optim.lr=-1', "optim.lr must be a finite number > 0, got -1"),
    ('optim.lr=abc', "optim.lr must be a finite number > 0, got 'abc'"),
    ('optim.lr=nan', 'optim.lr must be a finite number > 0, got nan'),
    ('optim.lr=inf', 'optim.lr must be a finite number > 0, got inf'),
    ('optim.lr=true', 'optim.lr must be a finite number > 0, got True'),
    ('optim.weight_decay=-0.1', 'optim.weight_decay must be a finite number >= 0, got -0.1'),
    ('data.batch_size=0', 'data.batch_size must be a positive integer, got 0'),
    ('data.batch_size=2.5', 'data.batch_size must be a positive integer, got 2.5'),
    ('data.batch_size=true', 'data.batch_size must be a positive integer, got True'),
    ('data.eval_batch_size=-3', 'data.eval_batch_size must be a positive integer, got -3'),
    ('data.num_workers=-1', 'data.num_workers must be an integer >= 0, got -1'),
    ('seed=abc', "seed must be an integer in [0, 2**31), got 'abc'"),
    ('seed=1.5', 'seed must be an integer in [0, 2**31), got 1.5'),
    ('optim.epochs=abc', "optim.epochs must be a positive integer, got 'abc'"),
    ('optim.epochs=0', 'optim.epochs must be a positive integer, got 0'),
    ('optim.warmup_epochs=-1', 'optim.warmup_epochs must be an integer >= 0, got -1'),
    ('optim.grad_clip=-1', 'optim.grad_clip must be a finite number >= 0 (0 or null: no clipping), got -1'),
    ('model.dropout=1.5', 'model.dropout must be a number in [0, 1), got 1.5'),
    ('model.hidden=0', 'model.hidden must be a positive integer, got 0'),
    ('model.aggr=median', "model.aggr must be one or more distinct of 'mean', 'sum', 'max'"),
    ('model.canonical_signs=both', "model.canonical_signs must be null, 'bias' or 'out', got 'both'"),
    ('model.fold_siren_bias=1', 'model.fold_siren_bias must be true or false, got 1'),
    ('contrastive.temperature=0', 'contrastive.temperature must be a finite number > 0, got 0'),
    ('probe.C=[]', 'probe.C must be a non-empty list of finite numbers > 0, got []'),
    ('data.format=zip', "data.format must be one of ('auto', 'nngraph'"),
    ('name=../x', "name must be a folder name: a non-empty string without / or \\, not . or .., got '../x'"),
    ('name=a/b', "name must be a folder name"),
    ('name=..', "name must be a folder name"),
    ('name=5', 'name must be a folder name: a non-empty string without / or \\, not . or .., got 5'),
    ('out_dir=', 'out_dir must be a folder (a non-empty string), got None'),
    ('transforms=RandomSignFlip', "transforms must be a list of transform names or {Name: {arg: value}}, got "
                                  "'RandomSignFlip'"),
    ('transforms=[{RandomSignFlip: {p: 2}}]', 'transforms[0] (RandomSignFlip) with arguments'),
    ('transforms=[{WeightMixUp: {gain: 1}}]', "transforms[0] (WeightMixUp) with arguments {'gain': 1}"),
    ('mode=probe', 'mode probe needs probe.checkpoint'),
    ('optim.lr=[', "override optim.lr='[' is not a YAML value"),
    # the model-zoo keys (issue 22)
    ('data.target=accuracy', "data.target must be null or one of ('test_acc'"),
    ('data.zoo_epochs=last', "data.zoo_epochs must be 'all', 'final' or a non-empty list of epochs"),
    ('data.zoo_epochs=[1, -1]', "data.zoo_epochs must be 'all', 'final'"),
    ('data.zoo_epochs=[]', "data.zoo_epochs must be 'all', 'final'"),
    ('data.zoo_seed=-1', 'data.zoo_seed must be an integer in [0, 2**31), got -1'),
    ('data.architecture=[64]', 'data.architecture must be null or a list of at least two positive layer sizes'),
    ('data.architecture=[64, 0, 10]', 'data.architecture must be null or a list of at least two positive'),
    ('data.architecture=64', 'data.architecture must be null or a list'),
    ('data.activation=[relu]', "data.activation must be null or an activation string, e.g. 'relu', got ['relu']"),
    ('data.target=test_acc', "data.target selects from a model zoo; it is an option of data.source 'zoo', "
                             "not 'digits'"),
    ('data.architecture=[64, 8, 10]', "data.architecture selects from a model zoo; it is an option of data.source"),
]
ZOO_BAD = [
    (['data.source=zoo', 'mode=contrastive'], "mode 'contrastive' is for classification; data.source 'zoo' is a "
                                              "regression task: use mode 'supervised'"),
    (['data.source=zoo', 'data.objects_per_class=3'], "data.objects_per_class selects objects of an INR dataset"),
]


@pytest.mark.parametrize('overrides, message', ZOO_BAD, ids=[' '.join(b[0]) for b in ZOO_BAD])
def test_a_zoo_config_that_cannot_run_is_refused(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        T.load_config(None, overrides)


def test_the_zoo_keys_pass_with_source_zoo():
    cfg = T.load_config(None, ['data.source=zoo', 'data.target=gap', 'data.zoo_epochs=[0, 4]', 'data.zoo_seed=3',
                               'data.architecture=[64, 8, 10]', 'data.activation=relu'])
    assert cfg['data']['zoo_epochs'] == [0, 4] and cfg['data']['architecture'] == [64, 8, 10]


@pytest.mark.parametrize('override, message', BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_refused_naming_key_value_and_expectation(override, message):
    with pytest.raises(ValueError) as info:
        T.load_config(None, [override])
    assert message in str(info.value) and '\n' not in str(info.value)


def test_every_key_of_the_defaults_is_checked():
    # A key added to DEFAULTS without a check would reach torch unchecked.
    assert set(C.flatten(T.DEFAULTS)) == set(C._CHECKS)
    T.validate(T.load_config(None))       # the defaults themselves pass


def test_good_values_pass_unchanged():
    cfg = T.load_config(None, ['optim.lr=1', 'optim.grad_clip=null', 'data.views=null', 'model.aggr=mean, max',
                               'seed=0', 'optim.warmup_epochs=0', 'name=run-1.b'])
    assert cfg['optim']['lr'] == 1 and cfg['optim']['grad_clip'] is None and cfg['name'] == 'run-1.b'


def test_a_refused_config_creates_nothing(tmp_path, toy):
    # run() checks too (a config dict built by hand), before any folder exists.
    cfg = toy()
    for key, value in (('name', '../escaped'), ('name', str(tmp_path / 'abs')), ('seed', 'abc')):
        bad = T.merge_config(cfg, {key: value})
        with pytest.raises(ValueError, match=key):
            T.run(bad, progress=False)
    bad = T.merge_config(cfg, {'data': {'batch_size': 2.5}})
    with pytest.raises(ValueError, match=r'data\.batch_size must be a positive integer, got 2\.5'):
        T.run(bad, progress=False)
    assert os.listdir(tmp_path) == [] and not (tmp_path.parent / 'escaped').exists()


def test_a_bad_yaml_file_is_one_line(tmp_path):
    p = tmp_path / 'broken.yaml'
    p.write_text('optim: {lr: [\n')
    with pytest.raises(ValueError, match=f'{p} is not valid YAML'):
        T.load_config(str(p))


def test_execution_keys_live_in_the_config_and_the_study_uses_them():
    from nngraph import study as S
    assert S.EXECUTION_KEYS is T.EXECUTION_KEYS
    assert {'compile', 'device', 'data.num_workers'} <= set(T.EXECUTION_KEYS)
    cfg = T.load_config(None)
    stripped = C.without_execution_keys(cfg)
    assert 'compile' not in stripped and 'num_workers' not in stripped['data'] and 'lr' in stripped['optim']
    assert 'num_workers' in cfg['data']                 # a copy


def test_check_resume_lists_every_changed_key_with_old_and_new_value():
    old = T.load_config(None, ['optim.epochs=4'])
    new = T.load_config(None, ['optim.epochs=3', 'optim.lr=0.1', 'seed=1', 'model.dropout=0.5',
                               'transforms=[RandomSignFlip]', 'compile=true', 'device=cpu',
                               'data.num_workers=2', 'out_dir=elsewhere'])
    with pytest.raises(ValueError) as info:
        C.check_resume(old, new, 'runs/x/checkpoint.pt')
    msg = str(info.value)
    assert msg.startswith('cannot resume from runs/x/checkpoint.pt') and '\n' not in msg
    for part in ('seed: 0 -> 1', 'optim.lr: 0.001 -> 0.1', 'model.dropout: 0.0 -> 0.5',
                 "transforms: [] -> ['RandomSignFlip']", 'optim.epochs: 4 -> 3 (a run is extended, never shortened)'):
        assert part in msg, part
    for execution in ('compile:', 'device:', 'data.num_workers:', 'out_dir:'):
        assert execution not in msg.split('; only')[0]
    # Execution keys alone, and a larger budget, pass.
    C.check_resume(old, T.merge_config(old, {'compile': True, 'optim': {'epochs': 10}}), 'x')
    # A key added since the checkpoint was made, at its default, is no difference.
    saved = T.merge_config(old, {})
    del saved['model']['canonical_signs']
    C.check_resume(saved, old, 'x')


def _train_py(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--quiet', *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_cli_refuses_bad_values_in_one_line_without_traceback(tmp_path):
    r = _train_py(f'out_dir={tmp_path}', 'name=../x', 'optim.lr=abc', cwd=tmp_path)
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert r.stderr.strip().count('\n') == 0 and 'must be' in r.stderr
    assert os.listdir(tmp_path) == []
