"""Zoo builds (nngraph/zoo/build.py): deterministic, sharded, resumable, refusing bad input by name."""
import os

import pytest
import torch
from torch_geometric.data import Batch

import nngraph
from nngraph.data import store
from nngraph.zoo import build as B
from nngraph.zoo import build_zoo, merge_zoo_shards, read_zoo
from nngraph.zoo.__main__ import main
from nngraph.zoo.dataset import ZooGraphDataset

from .conftest import TINY
from .test_plan import fake_fashion_mnist

# Smaller still, for the tests that build several times.
MINI = dict(TINY, networks=12, widths=(4,), epochs=(1,))


def _digest(root):
    return store.sha256(os.path.join(root, B.ZOO_FILE))


def test_same_seed_same_bytes_other_seed_other_zoo(tmp_path, tiny_zoo):
    again = build_zoo('digits', tmp_path / 'again', seed=0, **TINY)
    assert _digest(again) == _digest(tiny_zoo)
    other = build_zoo('digits', tmp_path / 'other', seed=1, **TINY)
    assert _digest(other) != _digest(tiny_zoo)


def test_zoo_contents(tiny_zoo):
    zoo = read_zoo(tiny_zoo)
    ck, runs = zoo['checkpoints'], zoo['runs']
    assert runs['run_id'].numel() == 24
    # every run has its checkpoints 0 .. budget, rows sorted by (run, epoch)
    key = ck['run_id'] * 100 + ck['epoch']
    assert torch.equal(key, key.sort().values)
    for r in range(24):
        assert ck['epoch'][ck['run_id'] == r].tolist() == list(range(int(runs['epochs'][r]) + 1))
    for a in zoo['architectures']:
        assert a['weights'][0].shape[1:] == (a['layer_sizes'][1], 64)


def test_graphs_reproduce_the_recorded_test_accuracy_exactly(tiny_zoo):
    """The strongest check: every checkpoint's graph, evaluated by nngraph.forward on the
    zoo's test images, has exactly the recorded test accuracy (batched and one by one)."""
    ds = ZooGraphDataset(tiny_zoo, 'train', epochs='all', fractions=(1.0, 0.0, 0.0))
    assert len(ds) == read_zoo(tiny_zoo)['checkpoints']['run_id'].numel()
    for arch in range(len(ds.architectures)):
        items = [ds[i] for i in (ds.checkpoints['architecture'] == arch).nonzero().squeeze(1).tolist()]
        batch = Batch.from_data_list(items)
        acc = (nngraph.forward(batch, ds.test_x).argmax(-1) == ds.test_y).float().mean(1)
        assert torch.equal(acc, batch.y.view(-1))
        for g in items[:2]:
            one = (nngraph.forward(g, ds.test_x).argmax(-1) == ds.test_y).float().mean()
            assert float(one) == float(g.y)


def test_shards_then_merge_equal_one_build(tmp_path):
    one = build_zoo('digits', tmp_path / 'one', **MINI)
    for i in range(3):
        path = build_zoo('digits', tmp_path / 'sharded', shard=(i, 3), **MINI)
        assert path.endswith(f'shard-{i}-of-3.pt')
    assert not os.path.exists(tmp_path / 'sharded' / B.ZOO_FILE)
    merge_zoo_shards(tmp_path / 'sharded')
    assert _digest(tmp_path / 'sharded') == _digest(one)


def test_merge_refuses_a_missing_or_corrupt_shard(tmp_path):
    build_zoo('digits', tmp_path, shard='0/2', **MINI)
    with pytest.raises(ValueError, match='shard-1-of-2.pt missing'):
        merge_zoo_shards(tmp_path)
    path = build_zoo('digits', tmp_path, shard='1/2', **MINI)
    rec = torch.load(path, weights_only=True)
    rec['parts'][0]['test_acc'][0] += 0.5
    torch.save(rec, path)
    with pytest.raises(ValueError, match='corrupt'):
        merge_zoo_shards(tmp_path)
    assert not os.path.exists(tmp_path / store.MANIFEST)


def test_killed_build_resumes_without_retraining(tmp_path, monkeypatch):
    clean = build_zoo('digits', tmp_path / 'clean', **MINI)
    total = len(B._plan('digits', 0, {k: v for k, v in MINI.items() if k != 'progress'}, None)[3])
    calls = []
    real = B._train_chunk

    def dies_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt('killed')
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(B, '_train_chunk', dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_zoo('digits', tmp_path / 'killed', **MINI)
    assert len(os.listdir(tmp_path / 'killed' / '.partial')) == 2
    assert not os.path.exists(tmp_path / 'killed' / '.lock')
    done = list(calls)
    calls.clear()

    def counts(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(B, '_train_chunk', counts)
    build_zoo('digits', tmp_path / 'killed', **MINI)
    assert len(calls) == total - 2
    assert not any(torch.equal(c, d) for c in calls for d in done)        # finished chunks not retrained
    assert _digest(tmp_path / 'killed') == _digest(clean)
    assert not os.path.exists(tmp_path / 'killed' / '.partial')


def test_complete_zoo_is_reused_and_other_settings_refused(tmp_path, monkeypatch):
    build_zoo('digits', tmp_path, **MINI)
    monkeypatch.setattr(B, '_train_chunk', lambda *a: pytest.fail('retrained a complete zoo'))
    assert build_zoo('digits', tmp_path, **MINI) == str(tmp_path)
    with pytest.raises(ValueError, match="networks: built 12, asked 13"):
        build_zoo('digits', tmp_path, **dict(MINI, networks=13))


@pytest.mark.parametrize('source, kwargs, culprit', [
    ('cifar', {}, "unknown zoo source 'cifar'"),
    ('digits', dict(networks=-1), 'networks=-1'),
    ('digits', dict(shard='3/2'), 'shard 3/2'),
    ('digits', dict(shard='half'), "shard must be written i/n"),
    ('digits', dict(lr=(1e-3, float('inf'))), 'lr=inf'),
    ('digits', dict(init_scale=(float('nan'), 1.0)), 'init_scale=nan'),
    ('digits', dict(seed=-1), 'seed=-1'),
])
def test_bad_input_is_refused_by_name(tmp_path, source, kwargs, culprit):
    kwargs = {**dict(networks=4, progress=False), **kwargs}
    with pytest.raises(ValueError, match=culprit):
        build_zoo(source, tmp_path, **kwargs)
    assert not os.path.exists(tmp_path / B.ZOO_FILE)


def test_read_zoo_refuses_a_replaced_file(tmp_path):
    root = build_zoo('digits', tmp_path, **MINI)
    with open(os.path.join(root, B.ZOO_FILE), 'ab') as f:
        f.write(b'x')
    with pytest.raises(ValueError, match='differs from the manifest'):
        read_zoo(root)


def test_fashion_mnist_zoo_from_idx_files(tmp_path):
    folder = fake_fashion_mnist(tmp_path / 'idx')
    root = build_zoo('fashion-mnist', tmp_path / 'zoo', source_dir=folder, networks=4, depths=(1,), widths=(4,),
                     epochs=(1,), train_images=30, test_images=12, batch_size=8, progress=False)
    ds = ZooGraphDataset(root, 'train', fractions=(1.0, 0.0, 0.0))
    assert ds.num_features == 16 and ds[0].layer_sizes[0] == 16


def test_cli_build_show_and_errors(tmp_path, capsys):
    argv = ['build', 'digits', '--root', str(tmp_path), '--networks', '4', '--depths', '1', '--widths', '4',
            '--epochs', '1', '--batch-size', '64', '--quiet']
    assert main(argv) == 0
    assert main(['show', str(tmp_path)]) == 0
    assert '"networks": 4' in capsys.readouterr().out
    assert main(argv[:4] + ['--lr', 'nan,1e-2', '--overwrite']) == 2
    assert 'lr=nan' in capsys.readouterr().err
    assert main(['build', 'digits', '--root', str(tmp_path / 'x'), '--shard', '2/2']) == 2


def test_a_second_writer_is_refused(tmp_path):
    """One process writes a zoo at a time: a live holder's lock is refused, naming it."""
    import json
    import socket
    from nngraph._atomic import LockHeldError
    with open(tmp_path / '.lock', 'w') as f:
        json.dump(dict(pid=os.getppid(), host=socket.gethostname(), since=0), f)
    with pytest.raises(LockHeldError, match=f'pid {os.getppid()}'):
        build_zoo('digits', tmp_path, **MINI)
