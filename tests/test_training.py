"""nngraph.training: losses, config handling, transform pipeline, and short
end-to-end runs on the built-in toy set (supervised, resume, contrastive)."""
import copy
import json
import os

import pytest
import torch
import torch.nn.functional as F

from nngraph import training as T
from nngraph.graph import forward


def toy_config(tmp_path, **over):
    cfg = T.load_config(None, [
        f'out_dir={tmp_path}', 'name=toy', 'data.source=toy', 'data.limit=64', 'data.batch_size=16',
        'model.hidden=16', 'model.edge_hidden=8', 'model.layers=2', 'model.out_dim=16',
        'optim.epochs=6', 'optim.lr=1e-2', 'device=cpu'] + [f'{k}={v}' for k, v in over.items()])
    return cfg


# --------------------------------------------------------------------------- losses

def test_soft_cross_entropy_equals_hard_for_one_hot():
    torch.manual_seed(0)
    logits, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    hard = T.soft_cross_entropy(logits, y)
    soft = T.soft_cross_entropy(logits, F.one_hot(y, 5).float())
    torch.testing.assert_close(hard, soft)
    torch.testing.assert_close(hard, F.cross_entropy(logits, y))


def test_soft_cross_entropy_of_mixed_labels():
    torch.manual_seed(1)
    logits = torch.randn(3, 4)
    y = torch.tensor([[0.3, 0.7, 0.0, 0.0]] * 3)
    expected = 0.3 * F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)) + \
        0.7 * F.cross_entropy(logits, torch.ones(3, dtype=torch.long))
    torch.testing.assert_close(T.soft_cross_entropy(logits, y), expected)
    assert T.hard_labels(y).tolist() == [1, 1, 1]


def test_nt_xent_matches_definition():
    torch.manual_seed(2)
    z1, z2, tau = torch.randn(4, 6), torch.randn(4, 6), 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.t() / tau
    losses = []
    for i in range(8):
        pos = (i + 4) % 8
        others = torch.cat([sim[i, :i], sim[i, i + 1:]])
        losses.append(-(sim[i, pos] - torch.logsumexp(others, 0)))
    torch.testing.assert_close(T.nt_xent(z1, z2, tau), torch.stack(losses).mean())
    # Identical views score better than unrelated ones.
    assert T.nt_xent(z1, z1, 0.1) < T.nt_xent(z1, z2, 0.1)


def test_warmup_cosine():
    f = T.warmup_cosine(total_steps=10, warmup_steps=2)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    assert f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.0)
    assert f(6) == pytest.approx(0.5)


# --------------------------------------------------------------------------- config

def test_overrides_are_parsed_and_nested():
    cfg = T.load_config(None, ['optim.lr=3e-4', 'model.layers=5', 'transforms=[RandomSignFlip]',
                               'data.limit=null', 'name=x'])
    assert cfg['optim']['lr'] == pytest.approx(3e-4) and isinstance(cfg['optim']['lr'], float)
    assert cfg['model']['layers'] == 5 and cfg['transforms'] == ['RandomSignFlip']
    assert cfg['data']['limit'] is None and cfg['name'] == 'x'


def test_unknown_keys_list_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'optim.learning_rate'.*'lr'"):
        T.load_config(None, ['optim.learning_rate=1'])
    p = tmp_path / 'bad.yaml'
    p.write_text('modle:\n  hidden: 3\n')
    with pytest.raises(ValueError, match=r"unknown config key 'modle'.*'model'"):
        T.load_config(str(p))
    with pytest.raises(ValueError, match='mode must be one of'):
        T.load_config(None, ['mode=reinforce'])
    with pytest.raises(ValueError, match='key.sub=value'):
        T.load_config(None, ['optim.lr'])


def test_config_file_name_is_default_run_name(tmp_path):
    p = tmp_path / 'my_run.yaml'
    p.write_text('optim:\n  epochs: 3\n')
    cfg = T.load_config(str(p))
    assert cfg['name'] == 'my_run' and cfg['optim']['epochs'] == 3


def test_transform_pipeline_by_name():
    source = T.toy_dataset(8, 'train')
    pipe = T.build_transforms(['RandomNeuronPermutation', {'WeightNoise': {'std': 0.0}},
                               {'WeightMixUp': {'mode': 'vanilla', 'lam': 1.0}}],
                              source=source, num_classes=2)
    names = [type(t).__name__ for t in pipe.transforms]
    assert names == ['RandomNeuronPermutation', 'WeightNoise', 'WeightMixUp', 'OneHotLabel']
    assert pipe.transforms[1].std == 0.0
    g = source[3]
    before = g.edge_attr.clone()
    out = pipe(g)
    # permutation, zero noise and MixUp at coefficient 1 keep the function
    x = torch.rand(50, 2) * 2 - 1
    torch.testing.assert_close(forward(out, x), forward(g, x), atol=1e-5, rtol=1e-5)
    assert not torch.equal(out.edge_attr, g.edge_attr)          # but the weights moved
    assert out.y.shape == (1, 2) and out.y.dtype == torch.float32
    assert torch.equal(out.y, F.one_hot(g.y, 2).float())
    assert g.y.dtype == torch.long and torch.equal(g.edge_attr, before)  # input untouched


def test_unknown_transform_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown transform 'Rotate'.*'RandomSignFlip'"):
        T.build_transforms(['Rotate'])
    with pytest.raises(ValueError, match='bad arguments for transform WeightNoise'):
        T.build_transforms([{'WeightNoise': {'gain': 1}}])
    with pytest.raises(ValueError, match='WeightMixUp needs'):
        T.build_transforms(['WeightMixUp'])


# --------------------------------------------------------------------------- runs

def _strip_times(history):
    return [{k: v for k, v in h.items() if k not in ('epoch_time_s', 'graphs_per_s')} for h in history]


def test_supervised_run_learns_toy_set(tmp_path):
    m = T.run(toy_config(tmp_path, **{'optim.epochs': 8}), progress=False)
    hist = m['epochs']
    assert hist[-1]['train_loss'] < 0.5 * hist[0]['train_loss']
    assert m['test_acc'] >= 0.9           # chance is 0.5
    run = tmp_path / 'toy'
    assert {'config.yaml', 'metrics.json', 'checkpoint.pt', 'curves.png'} <= set(os.listdir(run))
    saved = json.loads((run / 'metrics.json').read_text())
    assert saved['finished'] and saved['best_epoch'] == m['best_epoch']
    assert saved['test_acc'] == pytest.approx(hist[m['best_epoch']]['test_acc'])
    ck = T.load_checkpoint(run / 'checkpoint.pt')
    assert {'model', 'optimizer', 'scheduler', 'epoch', 'rng'} <= set(ck)


def test_finished_run_is_refused_unless_overwrite(tmp_path):
    cfg = toy_config(tmp_path, **{'optim.epochs': 1})
    T.run(cfg, progress=False)
    with pytest.raises(T.RunExistsError, match='finished run.*--resume.*--overwrite'):
        T.run(cfg, progress=False)
    assert T.run(cfg, overwrite=True, progress=False)['epochs'][0]['epoch'] == 0


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full = T.run(toy_config(tmp_path / 'a', **{'optim.epochs': 4}), progress=False)

    # Kill the second run right after its second checkpoint is written (the
    # supervised loop's own reference to save_checkpoint is the one to patch).
    from nngraph.training import loops
    real_save, calls = loops.save_checkpoint, []

    def save_then_die(path, **state):
        real_save(path, **state)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(loops, 'save_checkpoint', save_then_die)
    cfg = toy_config(tmp_path / 'b', **{'optim.epochs': 4})
    with pytest.raises(KeyboardInterrupt):
        T.run(cfg, progress=False)
    monkeypatch.setattr(loops, 'save_checkpoint', real_save)
    with pytest.raises(T.RunExistsError, match='partial run'):
        T.run(cfg, progress=False)
    resumed = T.run(cfg, resume=True, progress=False)
    assert _strip_times(resumed['epochs']) == _strip_times(full['epochs'])
    assert resumed['test_acc'] == full['test_acc'] and resumed['best_epoch'] == full['best_epoch']


@pytest.mark.slow
def test_compiled_run_computes_what_the_eager_run_does(tmp_path):
    eager = T.run(toy_config(tmp_path / 'a', **{'optim.epochs': 2}), progress=False)
    compiled = T.run(toy_config(tmp_path / 'b', **{'optim.epochs': 2, 'compile': 'true'}), progress=False)
    for e, c in zip(eager['epochs'], compiled['epochs']):
        for key in ('train_loss', 'val_loss', 'test_loss'):
            assert c[key] == pytest.approx(e[key], rel=1e-4), key
    # The checkpoint holds the plain module's state: no torch.compile prefixes,
    # so an eager run resumes it and every loader reads it.
    ck_e = T.load_checkpoint(tmp_path / 'a' / 'toy' / 'checkpoint.pt')
    ck_c = T.load_checkpoint(tmp_path / 'b' / 'toy' / 'checkpoint.pt')
    assert list(ck_c['model']) == list(ck_e['model'])


def test_compile_must_be_a_boolean(tmp_path):
    with pytest.raises(ValueError, match='compile must be true or false'):
        toy_config(tmp_path, compile='1')


def test_flat_baseline_runs(tmp_path):
    m = T.run(toy_config(tmp_path, **{'model.name': 'flat', 'optim.epochs': 2}), progress=False)
    assert len(m['epochs']) == 2 and 0 <= m['test_acc'] <= 1


@pytest.mark.slow
def test_contrastive_then_probe(tmp_path):
    m = T.run(toy_config(tmp_path, mode='contrastive+probe', **{'optim.epochs': 3}), progress=False)
    assert len(m['epochs']) == 3 and all(h['train_loss'] > 0 for h in m['epochs'])
    assert 0 <= m['probe']['test_acc'] <= 1 and 0 <= m['probe_random_encoder']['test_acc'] <= 1
    # A probe-only run reads the contrastive checkpoint and gives the same probe.
    cfg = toy_config(tmp_path, mode='probe', name='probe',
                     **{'probe.checkpoint': str(tmp_path / 'toy')})
    p = T.run(cfg, progress=False)
    assert p['probe'] == m['probe']


# --------------------------------------------------------------------------- study knobs

def test_samples_per_epoch_fixes_the_epoch_size(tmp_path):
    train = T.ListDataset(T.toy_dataset(20, 'train'))
    loader, sampler = T.train_loader(train, 8, 0, T.Distributed('cpu'), 0, samples_per_epoch=48)
    assert sampler is None and len(loader) == 6
    seen = torch.cat([b.object_id for b in loader])
    assert seen.numel() == 48
    # Consecutive shuffles: each pass of 20 draws every graph once.
    assert sorted(seen[:20].tolist()) == list(range(20)) and sorted(seen[20:40].tolist()) == list(range(20))
    m = T.run(toy_config(tmp_path, **{'data.samples_per_epoch': 32, 'optim.epochs': 1}), progress=False)
    assert m['epochs'][0]['graphs_per_s'] > 0
    with pytest.raises(ValueError, match=r'data\.samples_per_epoch must be a positive integer or null, got 0'):
        toy_config(tmp_path, **{'data.samples_per_epoch': 0})


def test_supervised_metrics_report_the_clean_training_accuracy(tmp_path):
    m = T.run(toy_config(tmp_path, **{'optim.epochs': 2}), progress=False)
    saved = json.loads((tmp_path / 'toy' / 'metrics.json').read_text())
    assert 0 <= saved['train_acc'] <= 1 and saved['train_loss'] > 0
    assert saved['train_acc'] == m['train_acc']
    # It is the selected model on the training split as stored: evaluate it again.
    cfg = toy_config(tmp_path)
    train = T.ListDataset(T.toy_dataset(64, 'train'))
    model = T.build_model(cfg, 2, (2, 8, 8, 1))
    model.load_state_dict(T.load_checkpoint(tmp_path / 'toy' / 'checkpoint.pt')['best']['state'])
    from torch_geometric.loader import DataLoader
    again = T.evaluate(model, DataLoader(train, batch_size=256), torch.device('cpu'), T.Distributed('cpu'))
    assert again['acc'] == pytest.approx(saved['train_acc'])
    # last_train_*: the last epoch's model (the checkpoint's), which says whether the model fits
    ckpt = T.load_checkpoint(tmp_path / 'toy' / 'checkpoint.pt')
    model.load_state_dict(ckpt['model'])
    last = T.evaluate(model, DataLoader(train, batch_size=256), torch.device('cpu'), T.Distributed('cpu'))
    assert last['acc'] == pytest.approx(saved['last_train_acc']) and last['loss'] == pytest.approx(saved['last_train_loss'])
    assert ckpt['best']['epoch'] < 1 or saved['last_train_acc'] == saved['train_acc']


def test_test_split_scored_once_when_not_every_epoch(tmp_path):
    """data.test_every_epoch=false: the history has no test column and the
    final test accuracy is that of the epoch every-epoch testing selects."""
    every = T.run(toy_config(tmp_path / 'a', **{'optim.epochs': 3}), progress=False)
    once = T.run(toy_config(tmp_path / 'b', **{'optim.epochs': 3, 'data.test_every_epoch': False}),
                 progress=False)
    assert all('test_acc' not in h and 'test_loss' not in h for h in once['epochs'])
    assert [h['val_acc'] for h in once['epochs']] == [h['val_acc'] for h in every['epochs']]
    assert once['best_epoch'] == every['best_epoch']
    assert once['test_acc'] == every['epochs'][every['best_epoch']]['test_acc'] == every['test_acc']
    assert (tmp_path / 'b' / 'toy' / 'curves.png').stat().st_size > 0


def test_objects_per_class_is_refused_for_the_toy_set(tmp_path):
    with pytest.raises(ValueError, match="data.objects_per_class .* 'toy'"):
        T.run(toy_config(tmp_path, **{'data.objects_per_class': 2}), progress=False)


def test_flat_encoder_pretrains_contrastively(tmp_path):
    m = T.run(toy_config(tmp_path, mode='contrastive+probe', **{'model.name': 'flat', 'model.flat_hidden': 16,
                                                                'optim.epochs': 2}), progress=False)
    assert len(m['epochs']) == 2 and all(h['train_loss'] > 0 for h in m['epochs'])
    assert 0 <= m['probe']['test_acc'] <= 1 and 0 <= m['probe_random_encoder']['test_acc'] <= 1


# --------------------------------------------------------------------------- baselines

@pytest.mark.parametrize('name, extra', [('statnn', {}), ('aligned_mlp', {'model.align_signs': True})])
def test_baselines_fit_the_toy_set(tmp_path, name, extra):
    m = T.run(toy_config(tmp_path, **{'model.name': name, 'model.flat_hidden': 32, 'optim.epochs': 6}, **extra),
              progress=False)
    hist = m['epochs']
    assert hist[-1]['train_loss'] < 0.5 * hist[0]['train_loss']
    assert m['train_acc'] >= 0.9          # chance is 0.5
    state = T.load_checkpoint(tmp_path / 'toy' / 'checkpoint.pt')['model']
    if name == 'aligned_mlp':
        # The reference is the first training graph, saved with the model.
        first = T.toy_dataset(64, 'train')[0]
        assert torch.equal(state['encoder.reference_edge_attr'], first.edge_attr)
    else:
        assert state['encoder.scale'].shape == (42,)     # 14 statistics per layer, 3 layers


def test_bad_model_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"model.name must be one of \('gnn', 'flat', 'statnn', 'aligned_mlp', 'sign_gnn'\), "
                                         r"got 'dwsnet'"):
        toy_config(tmp_path, **{'model.name': 'dwsnet'})
    with pytest.raises(ValueError, match="model.align_signs is an option of model.name 'aligned_mlp', not 'flat'"):
        toy_config(tmp_path, **{'model.name': 'flat', 'model.align_signs': True})
    with pytest.raises(ValueError, match='model.align_signs must be true or false'):
        toy_config(tmp_path, **{'model.name': 'aligned_mlp', 'model.align_signs': 'sine'})


def test_align_signs_on_relu_networks_is_refused():
    cfg = T.load_config(None, ['model.name=aligned_mlp', 'model.align_signs=true', 'model.flat_hidden=8'])
    model = T.build_model(cfg, 2, (2, 8, 8, 1))
    relu = [copy.copy(g) for g in T.toy_dataset(4, 'train')]
    for g in relu:
        g.activation = 'relu'
    with pytest.raises(ValueError, match=r"model\.align_signs: true.*odd activation.*'relu'"):
        T.fit_normalization(model, relu)


# --------------------------------------------------------------------------- data sources

def test_built_sources_other_than_digits_are_read_only(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    cfg = T.load_config(None, ['data.source=fashion-mnist', 'data.root=~/.cache/nngraph/fmnist'])
    root = tmp_path / '.cache' / 'nngraph' / 'fmnist'
    with pytest.raises(ValueError, match=f'holds no fashion-mnist build.*python -m nngraph.data build '
                                         f'fashion-mnist --out {root}'):
        T.build_datasets(cfg, build=True)
    assert not root.exists()              # nothing was fitted there
    root.mkdir(parents=True)
    (root / 'manifest.json').write_text(json.dumps({'settings': {'source': 'digits'}}))
    with pytest.raises(ValueError, match="holds a build of 'digits', but data.source is 'fashion-mnist'"):
        T.build_datasets(cfg, build=True)
    with pytest.raises(ValueError, match=r"data.source must be one of \('digits', 'fashion-mnist'"):
        T.load_config(None, ['data.source=imagenet'])


def test_build_workers_reach_the_builder_and_are_validated(tmp_path, monkeypatch):
    import nngraph.data
    from nngraph.training.data import build_datasets
    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        raise RuntimeError('recorded')
    monkeypatch.setattr(nngraph.data, 'build_inr_dataset', record)
    cfg = T.load_config(None, [f'data.root={tmp_path}/digits', 'data.build_workers=2'])
    with pytest.raises(RuntimeError, match='recorded'):
        build_datasets(cfg)
    assert seen['workers'] == 2 and seen['source'] == 'digits'
    with pytest.raises(ValueError, match='data.build_workers must be'):
        T.load_config(None, ['data.build_workers=0'])
    # how a build runs, not what it builds: a resumed run may change it
    assert 'data.build_workers' in T.EXECUTION_KEYS
