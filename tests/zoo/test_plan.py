"""Zoo plans (nngraph/zoo/plan.py): settings checked by name, runs independent of the zoo's size."""
import gzip
import os

import numpy as np
import pytest
import torch

from nngraph.zoo.plan import RUN_FIELDS, check_settings, plan_chunks, sample_runs, zoo_images


def test_runs_do_not_depend_on_the_number_of_networks():
    s = check_settings('digits', {})
    small, large = sample_runs(0, 10, s), sample_runs(0, 50, s)
    for k in small:
        assert torch.equal(small[k], large[k][:10])
    assert not torch.equal(sample_runs(1, 10, s)['lr'], small['lr'])


def test_runs_lie_in_their_ranges():
    s = check_settings('digits', dict(lr=(1e-3, 1e-2), label_noise=(0.1, 0.2)))
    runs = sample_runs(0, 500, s)
    assert set(RUN_FIELDS) < set(runs)
    assert float(runs['lr'].min()) >= 1e-3 and float(runs['lr'].max()) <= 1e-2
    assert float(runs['label_noise'].min()) >= 0.1 and float(runs['label_noise'].max()) <= 0.2
    assert set(runs['depth'].tolist()) == {1, 2, 3} and set(runs['width'].tolist()) == {8, 16, 32}
    assert set(runs['activation'].tolist()) == {0, 1, 2, 3}


def test_chunks_cover_every_run_once_in_one_architecture():
    s = check_settings('digits', {})
    runs = sample_runs(0, 300, s)
    chunks = plan_chunks(runs, 16)
    assert torch.equal(torch.cat(chunks).sort().values, torch.arange(300))
    for c in chunks:
        assert 1 <= c.numel() <= 16
        for f in ('depth', 'width', 'activation'):
            assert runs[f][c].unique().numel() == 1


@pytest.mark.parametrize('settings, culprit', [
    (dict(lr=(float('nan'), 1e-2)), 'lr=nan'),
    (dict(lr=(1e-2, 1e-3)), 'lr='),
    (dict(weight_decay=(0.0, 1e-2)), 'weight_decay=0.0'),
    (dict(label_noise=(0.0, 1.5)), 'label_noise='),
    (dict(train_fraction=(0.0, 1.0)), 'train_fraction='),
    (dict(networks=0), 'networks=0'),
    (dict(networks=2.5), 'networks=2.5'),
    (dict(depths=()), 'depths='),
    (dict(widths=(8, 8)), 'widths='),
    (dict(epochs=(0, 1)), 'epochs=0'),
    (dict(activations=('relu', 'swish')), 'swish'),
    (dict(batch_size=float('inf')), 'batch_size=inf'),
    (dict(views=3), 'views'),
    (dict(pool=2), 'pool'),                 # a fashion-mnist setting, not a digits one
])
def test_bad_settings_are_refused_by_name(settings, culprit):
    with pytest.raises(ValueError, match=culprit):
        check_settings('digits', settings)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(int(s).to_bytes(4, 'big') for s in array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder, n_train=40, n_test=12, size=8):
    """Four gzipped idx files of random images (pool 2 -> 4x4 = 16 features)."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        _write_idx(os.path.join(folder, f'{prefix}-images-idx3-ubyte.gz'), rng.integers(0, 256, (n, size, size)))
        _write_idx(os.path.join(folder, f'{prefix}-labels-idx1-ubyte.gz'), np.arange(n) % 10)
    return folder


def test_fashion_mnist_images_are_pooled_official_splits(tmp_path):
    folder = fake_fashion_mnist(tmp_path)
    s = check_settings('fashion-mnist', dict(train_images=30, test_images=100))
    data = zoo_images('fashion-mnist', s, 0, folder)
    assert data['train_x'].shape == (30, 16) and data['test_x'].shape == (12, 16)
    assert torch.equal(data['train_ids'], torch.arange(30)) and torch.equal(data['test_ids'], 40 + torch.arange(12))
    from nngraph.data.sources import load_idx_source
    raw = load_idx_source('fashion-mnist', folder)[0][0, :2, :2, 0]
    assert torch.isclose(data['train_x'][0, 0], raw.mean())


def test_digits_test_split_is_stratified_and_disjoint():
    data = zoo_images('digits', check_settings('digits', {}), 0)
    assert data['train_x'].shape[1] == 64
    assert not set(data['train_ids'].tolist()) & set(data['test_ids'].tolist())
    assert data['train_ids'].numel() + data['test_ids'].numel() == 1797
    assert abs(data['test_ids'].numel() - 599) <= 5
