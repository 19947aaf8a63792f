"""Tests for nngraph/data/published.py on small datasets fabricated in the exact
published layouts, checked against the original SIREN definitions (rewritten
here from the facts in each project's code, see the module docstring)."""
import json
import math
import os

import pytest
import torch
from torch import nn

from nngraph import forward
from nngraph.data import INRGraphDataset
from nngraph.data.published import detect_format
from nngraph.inr import grid, parse_convention
from tests.helpers import SineLayer


# --- the original definitions ------------------------------------------------

class DWSSineLayer(nn.Module):
    """DWSNets / neural-graphs hidden layer: own weight and bias, sin(30 (Wx + b))."""

    def __init__(self, d_in, d_out, w0=30.0, first=False):
        super().__init__()
        bound = 1 / d_in if first else math.sqrt(6 / d_in) / w0
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * nn.functional.linear(x, self.weight, self.bias))


class DWSINR(nn.Module):
    """INR(in_dim=2, n_layers=3, up_scale=16): seq = [sine, sine, Linear]; output + 0.5."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(DWSSineLayer(2, 32, first=True), DWSSineLayer(32, 32), nn.Linear(32, 1))

    def forward(self, x):
        return self.seq(x) + 0.5


class NFNSiren(nn.Module):
    """Siren(2, 32, hidden_layers=1, 1, outermost_linear=True, first/hidden omega_0 = 30)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(SineLayer(2, 32), SineLayer(32, 32), nn.Linear(32, 1))

    def forward(self, coords):
        return self.net(coords), coords


def randomised(module, seed):
    """A network with random (non-zero) biases too, so every parameter is tested."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


def check_same_function(ds, originals, key, call):
    coords = grid(28)
    for k in range(len(ds)):
        g = ds[k]
        net = originals[key(ds, k)]
        with torch.no_grad():
            torch.testing.assert_close(forward(g, coords), call(net, coords), rtol=1e-5, atol=1e-5)


# --- DWSNets -------------------------------------------------------------------

def make_dwsnets(root, absolute_prefix=None):
    split = {'train': [], 'val': [], 'test': []}
    originals = {}
    plan = {'train': [(3, 10), (7, 11), (1, 12), (3, 13)], 'val': [(0, 20), (9, 21)],
            'test': [(5, 30), (2, 31), (8, 32)]}
    for s, items in plan.items():
        for label, image_id in items:
            kind = 'testing' if s == 'test' else 'training'
            rel = os.path.join('mnist-inrs', f'mnist_png_{kind}_{label}_{image_id}', 'checkpoints',
                               'model_final.pth')
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path))
            net = randomised(DWSINR(), image_id)
            torch.save(net.state_dict(), path)
            shown = os.path.join(absolute_prefix, rel) if absolute_prefix else os.path.abspath(path)
            split[s].append((shown, str(label)))
            originals[(s, len(split[s]) - 1)] = net
    data = {s: {'path': [p for p, _ in v], 'label': [l for _, l in v]} for s, v in split.items()}
    with open(os.path.join(root, 'mnist_splits.json'), 'w') as f:
        json.dump(data, f)
    return originals, plan


def test_dwsnets_layout_evaluates_like_the_original_inr(tmp_path):
    originals, plan = make_dwsnets(tmp_path)
    assert detect_format(str(tmp_path)) == 'dwsnets'
    for s in ('train', 'val', 'test'):
        ds = INRGraphDataset(tmp_path, s)
        assert ds.format == 'dwsnets' and len(ds) == len(plan[s])
        assert ds.y.tolist() == [label for label, _ in plan[s]]
        assert parse_convention(ds.convention) == {'w0': 30.0, 'first_w0': 30.0, 'init': 'dwsnets',
                                                   'output_offset': 0.5}
        check_same_function(ds, originals, lambda d, k: (s, k), lambda net, c: net(c))


def test_dwsnets_absolute_paths_from_another_machine_resolve_under_root(tmp_path):
    originals, _ = make_dwsnets(tmp_path, absolute_prefix='/home/someone/dataset')
    ds = INRGraphDataset(tmp_path, 'val')
    check_same_function(ds, originals, lambda d, k: ('val', k), lambda net, c: net(c))


def test_missing_checkpoint_is_named(tmp_path):
    make_dwsnets(tmp_path)
    victim = next(tmp_path.glob('mnist-inrs/mnist_png_training_9_21/checkpoints/model_final.pth'))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match='mnist_png_training_9_21'):
        INRGraphDataset(tmp_path, 'val')


# --- neural-graphs -----------------------------------------------------------

def test_neural_graphs_layout_with_label_entries(tmp_path):
    originals, split = {}, {'train': {'path': [], 'label': []}, 'val': {'path': [], 'label': []},
                            'test': {'path': [], 'label': []}}
    for i, s in enumerate(['train', 'train', 'train', 'val', 'test', 'test']):
        folder = 'train' if s != 'test' else 'test'
        rel = f'fmnist_inrs/{folder}/model_{i}.pth'
        os.makedirs(tmp_path / 'fmnist_inrs' / folder, exist_ok=True)
        net = randomised(DWSINR(), 100 + i)
        torch.save({**net.state_dict(), 'label': i % 10}, tmp_path / rel)   # FMNIST files carry a label
        split[s]['path'].append(rel)
        split[s]['label'].append(i % 10)
        originals[(s, len(split[s]['path']) - 1)] = net
    with open(tmp_path / 'fmnist_splits.json', 'w') as f:
        json.dump(split, f)
    for s in ('train', 'val', 'test'):
        ds = INRGraphDataset(tmp_path, s, format='neural-graphs')
        assert ds.y.tolist() == split[s]['label']
        check_same_function(ds, originals, lambda d, k: (s, k), lambda net, c: net(c))


# --- NFN ------------------------------------------------------------------------

def make_nfn(root, n=10, aug=(0, 1)):
    originals = {}
    for idx in range(n):
        label = (3 * idx) % 10
        folders = [(f'randinit_smaller_{label}s', 0)]
        if idx < 6:      # NFT's extra views exist for training images only
            folders += [(f'randinit_smaller_aug{k}_{label}s', k + 1) for k in aug]
        for folder, view in folders:
            os.makedirs(root / folder, exist_ok=True)
            net = randomised(NFNSiren(), 1000 * view + idx)
            torch.save(net.state_dict(), root / folder / f'net{idx}.pth')
            originals[(idx, view)] = net
    return originals


def test_nfn_layout_with_views_evaluates_like_the_original_siren(tmp_path):
    originals = make_nfn(tmp_path)
    assert detect_format(str(tmp_path)) == 'nfn'
    opts = dict(split_points=(6, 8))
    train = INRGraphDataset(tmp_path, 'train', **opts)
    assert len(train) == 6 * 3 and train.views == 3
    assert sorted(set(train.object_id.tolist())) == list(range(6))
    assert train.y.tolist() == [(3 * i) % 10 for i in train.object_id.tolist()]
    assert parse_convention(train.convention)['output_offset'] == 0.0
    check_same_function(train, originals, lambda d, k: (int(d.object_id[k]), int(d.view_id[k])),
                        lambda net, c: net(c)[0])
    one = INRGraphDataset(tmp_path, 'train', views=1, **opts)
    assert len(one) == 6 and set(one.view_id.tolist()) == {0}
    test = INRGraphDataset(tmp_path, 'test', **opts)
    assert test.object_id.tolist() == [8, 9] and test.views == 1
    check_same_function(test, originals, lambda d, k: (int(d.object_id[k]), 0), lambda net, c: net(c)[0])


def test_nfn_numbering_gap_is_an_error(tmp_path):
    make_nfn(tmp_path, aug=())
    os.unlink(next(tmp_path.glob('randinit_smaller_*s/net4.pth')))
    with pytest.raises(ValueError, match='numbered 0..N-1 without gaps'):
        INRGraphDataset(tmp_path, 'train', split_points=(6, 8))


def test_unknown_layout_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='no complete INR dataset'):
        INRGraphDataset(tmp_path, 'train')
    with pytest.raises(ValueError, match="unknown dataset format 'zoo'"):
        INRGraphDataset(tmp_path, 'train', format='zoo')


def test_convert_reads_once_into_the_nngraph_format(tmp_path):
    from nngraph.data import convert_published
    from nngraph.data.__main__ import main
    from nngraph.data.show import show
    make_nfn(tmp_path / 'nfn')
    out = convert_published(tmp_path / 'nfn', 'nfn', tmp_path / 'conv', split_points=(6, 8))
    for s in ('train', 'val', 'test'):
        direct = INRGraphDataset(tmp_path / 'nfn', s, split_points=(6, 8))
        conv = INRGraphDataset(out, s)
        assert conv.format == 'nngraph' and len(conv) == len(direct)
        for name in ('y', 'object_id', 'view_id'):
            assert torch.equal(getattr(conv, name), getattr(direct, name))
        for k in range(len(conv)):
            assert torch.equal(conv[k].edge_attr, direct[k].edge_attr) and torch.equal(conv[k].x, direct[k].x)
        assert conv.convention == direct.convention and conv.num_classes == 10
    with pytest.raises(ValueError, match='stores no images'):
        show(out)
    make_dwsnets(tmp_path / 'dws')
    assert main(['convert', str(tmp_path / 'dws'), '--format', 'dwsnets', '--out', str(tmp_path / 'c2')]) == 0
    assert len(INRGraphDataset(tmp_path / 'c2', 'test')) == 3
