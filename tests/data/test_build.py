"""Tests for nngraph/data/build.py: splits, reuse, shards and merge, atomic writes, bad input."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from sklearn.datasets import load_digits

from nngraph.data import INRGraphDataset, build_inr_dataset, merge_shards, split_objects
from nngraph.data import store
from nngraph.data.__main__ import main

from .conftest import SMALL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(**over):
    args = dict(SMALL, limit=24, steps=40, chunk_size=8)
    args.update(over)
    return args


def load(path):
    return torch.load(path, weights_only=True)


def test_splits_are_disjoint_and_stratified():
    labels = torch.tensor(load_digits().target)
    splits = split_objects(labels, 0.1, 0.2, seed=3)
    sets = {s: set(v.tolist()) for s, v in splits.items()}
    assert not (sets['train'] & sets['val'] or sets['train'] & sets['test'] or sets['val'] & sets['test'])
    assert set().union(*sets.values()) == set(range(len(labels)))
    for c in range(10):
        n_c = int((labels == c).sum())
        assert int((labels[splits['test']] == c).sum()) == round(0.2 * n_c)
        assert int((labels[splits['val']] == c).sum()) == round(0.1 * n_c)
    again = split_objects(labels, 0.1, 0.2, seed=3)
    assert all(torch.equal(splits[s], again[s]) for s in splits)
    other = split_objects(labels, 0.1, 0.2, seed=4)
    assert not torch.equal(splits['test'], other['test'])


def test_build_is_split_by_object_with_views(small_build):
    obj = {s: INRGraphDataset(small_build, s).object_id for s in ('train', 'val', 'test')}
    assert not (set(obj['train'].tolist()) & set(obj['test'].tolist()))
    assert not (set(obj['train'].tolist()) & set(obj['val'].tolist()))
    # Every training object has views 0 and 1; val/test one view.
    train = INRGraphDataset(small_build, 'train')
    for o in obj['train'].unique().tolist():
        assert sorted(train.view_id[train.object_id == o].tolist()) == [0, 1]
    assert INRGraphDataset(small_build, 'test').views == 1
    manifest = json.load(open(os.path.join(small_build, 'manifest.json')))
    assert manifest['splits']['train']['psnr_min'] >= 35.0


def test_complete_build_is_reused_not_refitted(tmp_path):
    out = build_inr_dataset('digits', out=tmp_path, views=2, **tiny())
    stamp = os.stat(os.path.join(out, 'train.pt')).st_mtime_ns
    start = time.perf_counter()
    assert build_inr_dataset('digits', out=tmp_path, views=2, **tiny()) == out
    assert build_inr_dataset('digits', out=tmp_path, views=1, **tiny()) == out   # fewer views: a subset
    assert os.stat(os.path.join(out, 'train.pt')).st_mtime_ns == stamp
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueError, match=r"lr: built 0.002, asked 0.01.*overwrite=True"):
        build_inr_dataset('digits', out=tmp_path, views=2, **tiny(lr=1e-2))
    with pytest.raises(ValueError, match='views: built 2, asked 3'):
        build_inr_dataset('digits', out=tmp_path, views=3, **tiny())
    build_inr_dataset('digits', out=tmp_path, views=3, overwrite=True, **tiny())
    assert INRGraphDataset(tmp_path, 'train').views == 3


def test_more_views_extend_fewer_views(tmp_path):
    """View v of an object is the same network whatever else is built."""
    two = build_inr_dataset('digits', out=tmp_path / 'a', views=2, **tiny())
    three = build_inr_dataset('digits', out=tmp_path / 'b', views=3, **tiny(chunk_size=1000))
    a, b = INRGraphDataset(two, 'train'), INRGraphDataset(three, 'train', views=2)
    assert torch.equal(a.object_id, b.object_id) and torch.equal(a.view_id, b.view_id)
    torch.testing.assert_close(a.stacked_weights()[0][1], b.stacked_weights()[0][1], rtol=1e-4, atol=1e-5)


def test_objects_per_class_and_views_objects_per_class_build_a_low_data_subset(tmp_path):
    """A study's subset: the first k objects of each class per split, all
    views only for the first m training objects, every INR the network the
    full build fits for that (object, view)."""
    full = build_inr_dataset('digits', out=tmp_path / 'full', views=3, **tiny(limit=120))
    sub = build_inr_dataset('digits', out=tmp_path / 'sub', views=3, **tiny(limit=120),
                            objects_per_class={'train': 3, 'test': 1}, views_objects_per_class=2)
    for split, k in (('train', 3), ('val', None), ('test', 1)):
        a, b = INRGraphDataset(full, split), INRGraphDataset(sub, split)
        objects = torch.unique(a.object_id)
        labels = torch.zeros(int(objects.max()) + 1, dtype=torch.long)
        labels[a.object_id] = a.y
        expect = objects if k is None else torch.cat(
            [objects[labels[objects] == c][:k] for c in range(10)]).sort().values
        assert torch.equal(torch.unique(b.object_id), expect), split
    train = INRGraphDataset(sub, 'train')
    views = torch.zeros(int(train.object_id.max()) + 1, dtype=torch.long).index_add_(
        0, train.object_id, torch.ones_like(train.object_id))[torch.unique(train.object_id)]
    assert sorted(views.tolist()) == [1] * 10 + [3] * 20       # 2 of 3 objects per class have 3 views
    # The same (object, view) is the same network as in the full build.
    a, b = INRGraphDataset(full, 'train'), train
    key = lambda ds: (ds.object_id * 16 + ds.view_id).tolist()
    where = {k: i for i, k in enumerate(key(a))}
    idx = torch.tensor([where[k] for k in key(b)])
    torch.testing.assert_close(b.stacked_weights()[0][1], a.stacked_weights()[0][1][idx], rtol=1e-4, atol=1e-5)
    # Reading views > 1 is allowed only within the multi-view objects.
    assert len(INRGraphDataset(sub, 'train', views=3, objects_per_class=2)) == 60
    assert len(INRGraphDataset(sub, 'train', views=1)) == 30
    with pytest.raises(ValueError, match=r'views=2 but 10 object\(s\) .* have fewer views'):
        INRGraphDataset(sub, 'train', views=2)
    with pytest.raises(ValueError, match=r"objects_per_class names unknown split\(s\) \['dev'\]"):
        build_inr_dataset('digits', out=tmp_path / 'bad', views=1, objects_per_class={'dev': 2}, **tiny())
    with pytest.raises(ValueError, match='objects_per_class must be positive integers'):
        build_inr_dataset('digits', out=tmp_path / 'bad', views=1, objects_per_class=0, **tiny())
    assert main(['build', 'digits', '--out', str(tmp_path / 'cli'), '--views', '2', '--limit', '60',
                 '--grid', '8', '--steps', '5', '--quiet', '--objects-per-class', 'train=2,val=1,test=1',
                 '--views-objects-per-class', '1']) == 0
    assert len(INRGraphDataset(tmp_path / 'cli', 'train')) == 30 and len(INRGraphDataset(tmp_path / 'cli', 'val')) <= 10


def test_shards_merge_to_the_one_shot_build(tmp_path):
    one = build_inr_dataset('digits', out=tmp_path / 'one', views=2, **tiny())
    for i in range(3):
        path = build_inr_dataset('digits', out=tmp_path / 'sharded', views=2, shard=f'{i}/3', **tiny())
        assert path.endswith(f'shard-{i}-of-3.pt')
    with pytest.raises(FileNotFoundError, match='manifest.json is missing'):
        INRGraphDataset(tmp_path / 'sharded', 'train')           # shards alone are not a dataset
    merge_shards(tmp_path / 'sharded')
    for s in ('train', 'val', 'test'):
        a, b = load(tmp_path / 'one' / f'{s}.pt'), load(tmp_path / 'sharded' / f'{s}.pt')
        for key in ('weights', 'biases'):
            assert all(torch.equal(x, y) for x, y in zip(a[key], b[key]))
        for key in ('y', 'object_id', 'view_id', 'psnr', 'steps', 'seeds', 'images'):
            assert torch.equal(a[key], b[key]), key
    assert len(INRGraphDataset(tmp_path / 'sharded', 'train')) == len(INRGraphDataset(one, 'train'))


def test_merge_refuses_missing_partial_and_corrupt_shards(tmp_path):
    out = tmp_path / 'ds'
    for i in (0, 2):
        build_inr_dataset('digits', out=out, views=2, shard=(i, 3), **tiny())
    with pytest.raises(ValueError, match='shard-1-of-3.pt missing'):
        merge_shards(out)
    path = build_inr_dataset('digits', out=out, views=2, shard=(1, 3), **tiny())
    rec = load(path)
    rec['psnr'] = rec['psnr'][:-1]                                # one INR short: a partial shard
    torch.save(store.seal(rec), path)                             # ... consistent with its checksum
    with pytest.raises(ValueError, match=r'shard-1-of-3.pt.* is partial'):
        merge_shards(out)
    build_inr_dataset('digits', out=out, views=2, shard=(1, 3), **tiny())
    with open(path, 'r+b') as f:                                  # truncated file
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match=r'shard-1-of-3.pt.* truncated or corrupt'):
        merge_shards(out)
    build_inr_dataset('digits', out=out, views=2, shard=(1, 3), **tiny(lr=1e-2))
    with pytest.raises(ValueError, match=r'shard-1-of-3.pt.* other settings'):
        merge_shards(out)
    assert not os.path.exists(out / 'manifest.json')


def test_kill_mid_write_leaves_nothing_that_loads(tmp_path):
    """SIGKILL while train.pt is being written: no dataset loads, a rebuild completes."""
    out = tmp_path / 'ds'
    script = textwrap.dedent(f'''
        import sys, time, torch
        real_save = torch.save
        def slow_save(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            if isinstance(f, str):
                f = open(f, 'r+b')
            f.flush()
            f.truncate(1000)                           # leave the temp file half written
            print('writing', f.name, flush=True)
            time.sleep(60)
        torch.save = slow_save
        from nngraph.data import build_inr_dataset
        build_inr_dataset('digits', out={str(out)!r}, views=2, **{tiny()!r})
    ''')
    proc = subprocess.Popen([sys.executable, '-c', script], cwd=ROOT, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith('writing'), line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not os.path.exists(out / 'train.pt')                   # only a hidden temp file
    with pytest.raises(FileNotFoundError, match='manifest.json is missing'):
        INRGraphDataset(out, 'train')
    build_inr_dataset('digits', out=out, views=2, **tiny())       # rebuilds over the debris
    assert len(INRGraphDataset(out, 'train')) > 0


def test_missing_or_truncated_split_file_is_named(tmp_path):
    out = build_inr_dataset('digits', out=tmp_path, views=2, **tiny())
    path = os.path.join(out, 'val.pt')
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"val.pt' is truncated"):
        INRGraphDataset(out, 'val')
    with open(path, 'wb') as f:                                   # same size, other bytes
        f.write(bytes(len(data)))
    with pytest.raises(ValueError, match=r"val.pt' is corrupt"):
        INRGraphDataset(out, 'val')
    os.unlink(path)
    with pytest.raises(FileNotFoundError, match=r"val.pt' is missing"):
        INRGraphDataset(out, 'val')
    assert len(INRGraphDataset(out, 'test')) > 0                  # the other splits still load


@pytest.mark.parametrize('source, kwargs, error, message', [
    ('cifar', {}, ValueError, "unknown source 'cifar'"),
    ((torch.zeros(0, 8, 8), torch.zeros(0)), {}, ValueError, 'source is empty'),
    (([torch.zeros(8, 8), torch.zeros(9, 8)], [0, 1]), {}, ValueError,
     r'mixed sizes: image 0 has shape \(8, 8\) but image 1 has shape \(9, 8\)'),
    ((torch.full((3, 8, 8), 2.0), [0, 1, 2]), {}, ValueError, r'must lie in \[0, 1\]'),
    ((torch.zeros(3, 8, 8), [0, 1]), {}, ValueError, 'got 3 images but 2 labels'),
    ('digits', dict(views=0), ValueError, 'views must be at least 1'),
    ('digits', dict(shard='1/1'), ValueError, 'shard 1/1'),
    ('digits', dict(shard='x'), ValueError, 'shard must be written i/n'),
    ('digits', dict(limit=0), ValueError, 'limit must be a positive'),
    ('digits', dict(init='he'), ValueError, 'unknown SIREN init'),
])
def test_bad_input_is_a_clear_error(tmp_path, source, kwargs, error, message):
    args = dict(tiny(), views=1)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        build_inr_dataset(source, out=tmp_path, **args)
    assert not os.listdir(tmp_path)


def test_custom_source_and_command_line(tmp_path, capsys):
    imgs = torch.rand(12, 6, 6)
    out = build_inr_dataset((imgs, torch.arange(12) % 2), out=tmp_path / 'c', views=1,
                            **dict(tiny(), limit=None, grid=None))
    ds = INRGraphDataset(out, 'train')
    assert ds.layer_sizes == (2, 32, 32, 1) and ds.num_classes == 2
    args = ['build', 'digits', '--out', str(tmp_path / 'cli'), '--views', '1', '--limit', '20',
            '--grid', '8', '--steps', '20', '--chunk-size', '8', '--quiet']
    assert main(args + ['--shard', '0/2']) == 0 and main(args + ['--shard', '1/2']) == 0
    assert main(['merge', str(tmp_path / 'cli')]) == 0
    assert INRGraphDataset(tmp_path / 'cli', 'train').views == 1
    assert main(['build', 'cifar', '--out', str(tmp_path / 'x')]) == 2
    assert "unknown source 'cifar'" in capsys.readouterr().err
