"""Regression on a model zoo through train.py's stages (data.source zoo):
every model on mixed architectures or one, metrics and predictions written,
resume, and the flat baseline refusing a mix by name."""
import csv
import json

import pytest
import torch
from torch_geometric.loader import DataLoader

from nngraph import training as T
from nngraph.graph import architecture
from nngraph.training.data import architectures_of, zoo_datasets

TEST_KEYS = ('test_tau', 'test_r2', 'test_mae', 'test_loss')


@pytest.mark.parametrize('model', ['gnn', 'statnn'])
def test_a_regression_run_on_mixed_architectures(zoo, tmp_path, model):
    cfg = zoo(f'model.name={model}')
    train, val, test, _ = zoo_datasets(cfg, build=False)
    # the tiny zoo mixes depths 1-2 and widths 4/8: batches of several architectures
    assert len(architectures_of(train, val, test)) > 1
    batch = next(iter(DataLoader(train, batch_size=len(train))))
    assert len(set(architecture(batch))) > 1
    m = T.run(cfg, progress=False)
    assert m['task'] == 'regression' and m['target'] == 'test_acc'
    assert all(isinstance(m[k], float) for k in TEST_KEYS + ('best_val_tau', 'train_r2'))
    assert -1 <= m['test_tau'] <= 1
    on_disk = json.loads((tmp_path / 'zoo' / 'metrics.json').read_text())
    assert on_disk['finished'] and on_disk['test_tau'] == m['test_tau']
    assert {'train_loss', 'train_tau', 'val_tau', 'val_r2', 'val_mae'} <= set(on_disk['epochs'][0])
    with open(tmp_path / 'zoo' / 'predictions.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(test) and set(rows[0]) == {'run_id', 'epoch', 'y', 'pred'}
    # the targets written are the test split's, in its order
    torch.testing.assert_close(torch.tensor([float(r['y']) for r in rows]), test.y)


def test_resume_extends_a_regression_run_and_refuses_another_target(zoo):
    T.run(zoo('name=r', 'model.name=statnn', 'optim.epochs=1'), progress=False)
    with pytest.raises(ValueError, match=r"data.target: None -> 'train_acc'"):
        T.run(zoo('name=r', 'model.name=statnn', 'data.target=train_acc'), resume=True, progress=False)
    extended = T.run(zoo('name=r', 'model.name=statnn', 'optim.epochs=2'), resume=True, progress=False)
    assert [row['epoch'] for row in extended['epochs']] == [0, 1]


def test_an_interrupted_regression_run_resumes_bit_for_bit(zoo, tmp_path, monkeypatch):
    from nngraph.training import loops
    whole = T.run(zoo('name=whole', 'model.name=gnn'), progress=False)
    real, calls = loops.save_checkpoint, [0]

    def stop_after_first(path, **state):          # the run is killed after its first epoch's checkpoint
        real(path, **state)
        calls[0] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(loops, 'save_checkpoint', stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        T.run(zoo('name=cut', 'model.name=gnn'), progress=False)
    monkeypatch.setattr(loops, 'save_checkpoint', real)
    resumed = T.run(zoo('name=cut', 'model.name=gnn'), resume=True, progress=False)
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ('epoch_time_s', 'graphs_per_s')} for r in rows]
    assert drop(resumed['epochs']) == drop(whole['epochs'])
    assert [resumed[k] for k in TEST_KEYS] == [whole[k] for k in TEST_KEYS]


def test_flat_refuses_mixed_architectures_and_reads_one(zoo):
    with pytest.raises(ValueError, match=r"model.name 'flat' reads networks of one architecture, but the data "
                                         r"holds 4 .*select one with data.architecture \(e.g. "
                                         r"data.architecture=\[64, 4, 4, 10\]\)"):
        T.run(zoo('model.name=flat'), progress=False)
    m = T.run(zoo('model.name=flat', 'data.architecture=[64, 8, 10]', 'transforms=[RandomNeuronPermutation]',
                  'name=one'), progress=False)
    assert isinstance(m['test_tau'], float)


def test_positive_scaling_runs_on_the_relu_subset_and_refuses_the_mix(zoo):
    spec = 'transforms=[{RandomPositiveScaling: {low: 0.5, high: 2.0}}]'
    # zoo_seed 1: a split of the tiny zoo with relu runs on every side
    T.run(zoo(spec, 'data.activation=relu', 'data.zoo_seed=1', 'name=relu'), progress=False)
    with pytest.raises(ValueError, match='tanh'):        # the transform names the activation it cannot scale
        T.run(zoo(spec, 'name=mixed'), progress=False)


def test_a_selection_that_empties_a_split_is_named(zoo):
    with pytest.raises(ValueError, match=r'data.architecture=\[64, 3, 10\].*leaves the train/val/test split'):
        T.run(zoo('data.architecture=[64, 3, 10]'), progress=False)
