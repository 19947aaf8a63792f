"""Tests for nngraph/data/sources.py: idx files, Fashion-MNIST / MNIST, fixed splits."""
import gzip
import json
import os

import numpy as np
import pytest
import torch

from nngraph import data as D
from nngraph import inr as I
from nngraph.data import INRGraphDataset, build_inr_dataset
from nngraph.data.__main__ import main
from nngraph.data.build import data_root, fixed_splits
from nngraph.data.sources import IDX_SOURCES, load_idx_source, load_source, read_idx, source_dir
from nngraph.graph import forward

FMNIST_DIR = IDX_SOURCES['fashion-mnist']['default']
HAVE_FMNIST = os.path.isfile(os.path.join(FMNIST_DIR, 'train-labels-idx1-ubyte.gz'))
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason='apt-get install -y dataset-fashion-mnist')


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array (LeCun's format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, array, gz=True):
    data = idx_bytes(array)
    with (gzip.open(path, 'wb') if gz else open(path, 'wb')) as f:
        f.write(data)


def fake_source(folder, n_train=40, n_test=10, size=8, gz=True, seed=0):
    """Four idx files of random images with labels 0..9 in ``folder``."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        ext = '.gz' if gz else ''
        write_idx(os.path.join(folder, f'{prefix}-images-idx3-ubyte{ext}'), images, gz)
        write_idx(os.path.join(folder, f'{prefix}-labels-idx1-ubyte{ext}'), labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize('gz', [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.random.default_rng(1).integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    path = tmp_path / ('a.gz' if gz else 'a')
    write_idx(path, a, gz)
    np.testing.assert_array_equal(read_idx(path), a)


def test_load_idx_source_orders_train_then_test(tmp_path):
    arrays = fake_source(tmp_path, gz=False)
    images, labels, num_train = load_idx_source('mnist', tmp_path)
    assert num_train == 40 and images.shape == (50, 8, 8, 1) and images.dtype == torch.float32
    expected = np.concatenate([arrays['train'][0], arrays['t10k'][0]]) / 255.0
    np.testing.assert_allclose(images[..., 0].numpy(), expected, rtol=0, atol=1e-7)
    assert labels.tolist() == np.concatenate([arrays['train'][1], arrays['t10k'][1]]).tolist()


def test_source_dir_from_environment(tmp_path, monkeypatch):
    fake_source(tmp_path)
    monkeypatch.setenv('NNGRAPH_FASHION_MNIST_DIR', str(tmp_path))
    assert source_dir('fashion-mnist') == str(tmp_path)
    images, labels, name = load_source('fashion-mnist')
    assert name == 'fashion-mnist' and images.shape == (50, 8, 8, 1)


def test_missing_files_name_the_directory_and_the_package(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_idx_source('fashion-mnist', tmp_path)
    assert str(tmp_path) in str(err.value)
    assert 'apt-get install -y dataset-fashion-mnist' in str(err.value)
    assert 'train-images-idx3-ubyte' in str(err.value)


def test_bad_magic_is_refused_by_name(tmp_path):
    fake_source(tmp_path, gz=False)
    path = tmp_path / 'train-labels-idx1-ubyte'
    raw = bytearray(path.read_bytes())
    raw[2] = 0x42
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match='train-labels-idx1-ubyte.*magic'):
        load_idx_source('mnist', tmp_path)


@pytest.mark.parametrize('gz', [True, False])
def test_truncated_file_is_refused_by_name(tmp_path, gz):
    fake_source(tmp_path, gz=gz)
    name = 't10k-images-idx3-ubyte' + ('.gz' if gz else '')
    path = tmp_path / name
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) - 7])
    with pytest.raises(ValueError, match=name.replace('.', r'\.')):
        load_idx_source('mnist', tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    fake_source(tmp_path)
    write_idx(tmp_path / 'train-labels-idx1-ubyte.gz', np.zeros(39, dtype=np.uint8))
    with pytest.raises(ValueError, match='40 images.*39 labels'):
        load_idx_source('mnist', tmp_path)


def test_fixed_split_without_a_published_list_is_stratified_over_training_images():
    labels = torch.arange(120) % 10
    splits = fixed_splits('mnist', 100, 120, labels, seed=0, val_fraction=0.2)
    assert splits['test'].tolist() == list(range(100, 120))
    assert len(splits['val']) == 20 and torch.bincount(labels[splits['val']]).tolist() == [2] * 10
    assert sorted(splits['train'].tolist() + splits['val'].tolist()) == list(range(100))


@needs_fmnist
def test_fashion_mnist_has_the_published_split():
    images, labels, num_train = load_idx_source('fashion-mnist')
    assert images.shape == (70000, 28, 28, 1) and num_train == 60000
    splits = fixed_splits('fashion-mnist', num_train, 70000, labels)
    published = json.load(open(os.path.join(os.path.dirname(D.__file__), 'splits',
                                             'fashion-mnist.json')))['val']
    assert splits['val'].tolist() == sorted(published) and len(published) == 5000
    assert len(splits['train']) == 55000 and splits['test'].tolist() == list(range(60000, 70000))
    assert not set(splits['train'].tolist()) & set(published)
    # Fashion-MNIST's training labels start 9, 0, 0, 3 (idx order); classes are balanced.
    assert labels[:4].tolist() == [9, 0, 0, 3]
    assert torch.bincount(labels[splits['test']]).tolist() == [1000] * 10


@needs_fmnist
def test_fashion_mnist_slice_builds_and_reads(tmp_path):
    out = build_inr_dataset('fashion-mnist', out=tmp_path / 'fm', limit=28, steps=15, chunk_size=16,
                            progress=False)
    manifest = json.load(open(os.path.join(out, 'manifest.json')))
    assert {s: e['num_inrs'] for s, e in manifest['splits'].items()} == {'train': 22, 'val': 2, 'test': 4}
    assert manifest['settings']['split'] == 'published' and manifest['layer_sizes'] == [2, 32, 32, 1]
    images, labels, _ = load_idx_source('fashion-mnist')
    coords = I.grid(28)
    for split in ('train', 'val', 'test'):
        ds = INRGraphDataset(out, split)
        ids = ds.object_id
        assert ((ids >= 60000) == (split == 'test')).all()
        for k in range(len(ds)):
            g = ds[k]
            assert int(g.y) == int(labels[ids[k]])
            # The graph is the whole INR (offset folded in): its PSNR on its image is the recorded one.
            pred = forward(g, coords)
            assert float(I.psnr(pred[None], images[ids[k]].reshape(1, -1, 1))) == pytest.approx(
                float(ds.psnr[k]), abs=1e-3)


def test_build_cli_names_missing_source(tmp_path, capsys):
    status = main(['build', 'fashion-mnist', '--source-dir', str(tmp_path), '--out', str(tmp_path / 'o'),
                   '--quiet'])
    assert status == 2
    assert 'apt-get install -y dataset-fashion-mnist' in capsys.readouterr().err


def test_fixed_split_sources_refuse_split_fractions(tmp_path):
    fake_source(tmp_path)
    with pytest.raises(TypeError, match='fixed split.*test_fraction'):
        build_inr_dataset('fashion-mnist', out=tmp_path / 'o', source_dir=tmp_path, test_fraction=0.2)


def test_mnist_build_from_fabricated_files_uses_the_official_test_set(tmp_path):
    fake_source(tmp_path / 'src', n_train=40, n_test=10)
    out = build_inr_dataset('mnist', out=tmp_path / 'o', source_dir=tmp_path / 'src', steps=5,
                            val_fraction=0.25, chunk_size=64, progress=False)
    assert sorted(INRGraphDataset(out, 'test').object_id.tolist()) == list(range(40, 50))
    assert len(INRGraphDataset(out, 'val')) == 10 and len(INRGraphDataset(out, 'train')) == 30
    # Reused as it is when asked again with the same settings.
    before = os.path.getmtime(os.path.join(out, 'train.pt'))
    build_inr_dataset('mnist', out=tmp_path / 'o', source_dir=tmp_path / 'src', steps=5,
                      val_fraction=0.25, chunk_size=64, progress=False)
    assert os.path.getmtime(os.path.join(out, 'train.pt')) == before


def test_data_root_is_outside_the_checkout_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv('NNGRAPH_DATA_ROOT', raising=False)
    assert data_root('fashion-mnist') == os.path.expanduser('~/.cache/nngraph/fashion-mnist')
    monkeypatch.setenv('NNGRAPH_DATA_ROOT', str(tmp_path))
    assert data_root('x') == os.path.join(str(tmp_path), 'x')


@pytest.mark.parametrize('label, dtype_byte', [(200, 0x08), (10, 0x08), (-1, 0x09)])
def test_label_outside_the_classes_is_refused_naming_file_and_value(tmp_path, label, dtype_byte):
    """Issue 19 row 8: a label 200 in a 10-class source built with num_classes=201."""
    fake_source(tmp_path, gz=False)
    labels = (np.arange(10) % 10).astype(np.int8 if dtype_byte == 0x09 else np.uint8)
    labels[7] = label
    raw = bytes([0, 0, dtype_byte, 1]) + (10).to_bytes(4, 'big') + labels.tobytes()
    (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(raw)
    with pytest.raises(ValueError, match=rf"t10k-labels-idx1-ubyte' holds label {label} at position 7; "
                                         r'mnist has 10 classes'):
        load_idx_source('mnist', tmp_path)
    with pytest.raises(ValueError, match=rf'holds label {label}'):
        build_inr_dataset('mnist', out=tmp_path / 'o', source_dir=tmp_path, steps=1, progress=False)
    assert not os.path.exists(tmp_path / 'o')


def test_float_labels_and_empty_image_files_are_refused_by_name(tmp_path):
    fake_source(tmp_path, gz=False)
    raw = bytes([0, 0, 0x0D, 1]) + (40).to_bytes(4, 'big') + np.zeros(40, dtype='>f4').tobytes()
    (tmp_path / 'train-labels-idx1-ubyte').write_bytes(raw)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte' must hold integer labels"):
        load_idx_source('mnist', tmp_path)
    fake_source(tmp_path, gz=False)
    write_idx(tmp_path / 't10k-images-idx3-ubyte', np.zeros((0, 8, 8), dtype=np.uint8), gz=False)
    write_idx(tmp_path / 't10k-labels-idx1-ubyte', np.zeros(0, dtype=np.uint8), gz=False)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte' holds no images"):
        load_idx_source('mnist', tmp_path)
