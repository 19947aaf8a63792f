"""Tests for nngraph/ceiling.py: renderings are the INRs' own function on their grid,
images are the same objects in the same order, the CLI trains and writes its record,
and what it refuses."""
import json
import os

import pytest
import torch

import nngraph
from nngraph import ceiling as C
from nngraph import inr as I
from nngraph.data import INRGraphDataset, build_inr_dataset, load_source, store
from nngraph.data.build import defaults_for, fixed_splits

from tests.data.test_sources import fake_source

FMNIST_DIR = '/usr/share/datasets/fashion-mnist'
HAVE_FMNIST = os.path.isfile(os.path.join(FMNIST_DIR, 't10k-labels-idx1-ubyte.gz'))

# 200 digits on their native 8x8 grid, 2 views per training image, short fits
# with the build's own conventions (about 2 s): the INRs need not be good, only
# what they are.
TINY = dict(limit=200, grid=8, init='dwsnets', w0=30.0, first_w0=None, output_offset=0.5, steps=60,
            lr=2e-3, target_psnr=None, chunk_size=64, progress=False)


@pytest.fixture(scope='module')
def build(tmp_path_factory):
    return str(build_inr_dataset('digits', out=tmp_path_factory.mktemp('ceiling-digits'), views=2, seed=0,
                                 **TINY))


@pytest.fixture(scope='module')
def renderings(build):
    return C.load_inputs(build, 'renderings')


def test_renderings_are_each_inrs_forward_on_its_grid_and_reproduce_its_psnr(build, renderings):
    ds = INRGraphDataset(build, 'train')
    coords = I.grid(8, 8)
    x = renderings['splits']['train']['x']
    assert x.shape == (len(ds), 1, 8, 8) and ds.views == 2
    for k in (0, 1, 7, len(ds) - 1):          # views of one object, and others
        own = nngraph.forward(ds[k], coords).reshape(1, 8, 8).clamp(0, 1)
        torch.testing.assert_close(x[k], own, atol=1e-5, rtol=0)
    # Unclamped, every INR's PSNR against its image is the one its build recorded.
    rec = store.read_split(build, 'train')
    raw = C.render(rec['weights'], rec['biases'], rec['convention'], (8, 8), chunk=37, clamp=False)
    images = C.load_inputs(build, 'images')['splits']['train']['x']
    torch.testing.assert_close(I.psnr(raw, images), rec['psnr'], atol=1e-2, rtol=0)
    assert float(raw.min()) < 0 or float(raw.max()) > 1      # so the clamp above mattered
    assert bool(((x >= 0) & (x <= 1)).all())


def test_images_are_the_same_objects_labels_and_order_as_the_renderings(build, renderings):
    images = C.load_inputs(build, 'images')
    source, labels, _ = load_source('digits', grid=8)
    for s in store.SPLITS:
        r, i = renderings['splits'][s], images['splits'][s]
        assert torch.equal(r['y'], i['y']) and torch.equal(r['object_id'], i['object_id'])
        assert torch.equal(r['view_id'], i['view_id'])
        assert r['x'].shape == i['x'].shape
        # the source image of every item's object, at the build's grid, once per view
        assert torch.equal(i['x'], source[i['object_id']].permute(0, 3, 1, 2))
        assert torch.equal(i['y'], labels[i['object_id']])
    assert images['splits']['train']['view_id'].max() == 1


def test_cli_trains_above_chance_and_writes_the_record(build, tmp_path, capsys):
    out = tmp_path / 'c.json'
    assert C.main([build, '--input', 'renderings', '--epochs', '4', '--seeds', '0', '1', '--batch-size', '32',
                   '--out', str(out), '--quiet']) == 0
    rec = json.loads(out.read_text())
    assert [r['seed'] for r in rec['seeds']] == [0, 1]
    assert rec['mean']['test_acc'] > 0.3 and rec['data']['clamp'] == [0.0, 1.0]      # chance is 0.1
    for r in rec['seeds']:
        assert 1 <= r['best_epoch'] <= 4 and len(r['val_acc_per_epoch']) == 4
        assert r['val_acc'] == max(r['val_acc_per_epoch']) and r['wall_time_s'] >= 0
    assert rec['data']['grid'] == [8, 8] and rec['data']['splits']['train']['samples'] == \
        rec['data']['splits']['train']['objects'] * 2
    assert rec['command'].startswith('python -m nngraph.ceiling ') and '--seeds 0 1' in rec['command']
    assert 'cores' in rec['machine'] and rec['std']['test_acc'] >= 0
    assert 'test' in capsys.readouterr().out


def test_training_is_seeded(build):
    data = C.load_inputs(build, 'images')
    a, b = (C.train_cnn(data, 3, epochs=1, batch_size=64, progress=False) for _ in range(2))
    assert a['test_acc'] == b['test_acc'] and a['val_acc_per_epoch'] == b['val_acc_per_epoch']


def test_source_images_use_the_fixed_split_of_the_builder(tmp_path):
    arrays = fake_source(tmp_path, n_train=240, n_test=20, size=8)
    data = C.load_inputs(input='images', source='mnist', source_dir=str(tmp_path))
    sp = data['splits']
    labels = torch.cat([torch.from_numpy(arrays[p][1]).long() for p in ('train', 't10k')])
    split = fixed_splits('mnist', 240, 260, labels, 0, defaults_for('mnist')['val_fraction'])
    assert [sp[s]['y'].numel() for s in store.SPLITS] == [220, 20, 20]     # a twelfth of training is val
    for s in store.SPLITS:
        assert torch.equal(sp[s]['object_id'], split[s]) and torch.equal(sp[s]['y'], labels[split[s]])
    first = torch.from_numpy(arrays['train'][0][int(split['val'][0])]).float() / 255
    assert torch.equal(sp['val']['x'][0, 0], first) and data['shape'] == [8, 8, 1]


@pytest.mark.skipif(not HAVE_FMNIST, reason='Fashion-MNIST idx files not installed')
def test_fashion_mnist_images_have_the_published_split():
    sp = C.load_inputs(input='images', source='fashion-mnist')['splits']
    assert [sp[s]['x'].shape[0] for s in store.SPLITS] == [55000, 5000, 10000]
    assert sp['train']['x'].shape[1:] == (1, 28, 28)


def test_refusals(build, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match='not an INR build.*manifest.json is missing'):
        C.load_inputs(tmp_path, 'renderings')
    with pytest.raises(ValueError, match='not an INR build.*not a folder'):
        C.load_inputs(tmp_path / 'absent', 'images')
    with pytest.raises(ValueError, match="unknown --input 'pixels'"):
        C.load_inputs(build, 'pixels')
    with pytest.raises(ValueError, match='not both or neither'):
        C.load_inputs(build, 'images', source='fashion-mnist')
    with pytest.raises(ValueError, match='renderings need the INRs of a build'):
        C.load_inputs(input='renderings', source='fashion-mnist')
    with pytest.raises(ValueError, match="no fixed split.*'digits'|'digits'.*no fixed split"):
        C.load_inputs(input='images', source='digits')
    with pytest.raises(ValueError, match=r'not on this machine.*train-images-idx3-ubyte.*' + str(tmp_path)):
        C.load_inputs(input='images', source='fashion-mnist', source_dir=str(tmp_path))
    # A build whose split files hold no images (a converted published dataset).
    real = store.read_split
    monkeypatch.setattr(store, 'read_split', lambda *a: dict(real(*a), images=torch.zeros(0)))
    with pytest.raises(ValueError, match='holds no source images'):
        C.load_inputs(build, 'images')
    # The command line reports a refusal in one line, exit status 2.
    assert C.main([str(tmp_path), '--input', 'renderings', '--quiet']) == 2
    assert capsys.readouterr().err.startswith('error: ')
