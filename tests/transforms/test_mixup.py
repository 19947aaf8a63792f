"""WeightMixUp: interpolation of weights and soft labels, the three partner
modes, refusals, and the batch path against the per-sample path."""
from __future__ import annotations

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, InMemoryDataset
from torch_geometric.loader import DataLoader

from nngraph.graph import forward, from_weights
from nngraph.matching import align, distance
from nngraph.transforms import WeightMixUp
from nngraph.transforms.mixup import sample_lam

SIZES = (2, 12, 12, 1)
MODES = ('vanilla', 'permute', 'align')


def graph(sizes=SIZES, activation='sine:30.0', seed=0, y=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(sizes[l + 1], sizes[l], generator=gen, dtype=dtype) / sizes[l] ** 0.5
               for l in range(len(sizes) - 1)]
    biases = [torch.randn(sizes[l + 1], generator=gen, dtype=dtype) * 0.1
              for l in range(len(sizes) - 1)]
    return from_weights(weights, biases, activation, y=None if y is None else torch.tensor([y]))


def onehot(c, k=3):
    return torch.nn.functional.one_hot(torch.tensor([c]), k).float()


def snapshot(g):
    return g.edge_attr.clone(), g.x.clone(), g.y.clone()


def same(g, snap):
    return torch.equal(g.edge_attr, snap[0]) and torch.equal(g.x, snap[1]) and torch.equal(g.y, snap[2])


SOURCE = [graph(seed=10 + i, y=i % 3) for i in range(6)]


@pytest.mark.parametrize('mode', MODES)
def test_coefficient_one_returns_the_sample(mode):
    g = graph(seed=1, y=2)
    snap = snapshot(g)
    t = WeightMixUp(SOURCE, mode, signs=mode == 'align', lam=1.0)
    out = t(g)
    assert torch.equal(out.edge_attr, g.edge_attr) and torch.equal(out.x, g.x)
    assert torch.equal(out.y, onehot(2)) and out.y.shape == (1, 3)
    assert same(g, snap)


@pytest.mark.parametrize('mode', MODES)
def test_coefficient_zero_computes_the_partner(mode):
    partner = graph(seed=5, y=1, dtype=torch.float64)
    g = graph(seed=1, y=0, dtype=torch.float64)
    out = WeightMixUp([partner], mode, signs=mode == 'align', lam=0.0)(g)
    x = torch.rand(50, 2, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(forward(out, x), forward(partner, x), rtol=1e-10, atol=1e-10)
    assert torch.equal(out.y, onehot(1, 2))
    if mode == 'vanilla':
        assert torch.equal(out.edge_attr, partner.edge_attr)
    if mode == 'align':   # the partner moved towards the sample
        assert float(distance(out, g)) < float(distance(partner, g))


@pytest.mark.parametrize('mode', MODES)
def test_mixed_weights_and_soft_labels(mode):
    g, partner = graph(seed=1, y=2), graph(seed=7, y=0)
    lam = 0.3
    out = WeightMixUp([partner], mode, lam=lam, num_classes=4)(g)
    torch.testing.assert_close(out.y, lam * onehot(2, 4) + (1 - lam) * onehot(0, 4))
    torch.testing.assert_close(out.y.sum(), torch.tensor(1.0))
    if mode == 'vanilla':
        torch.testing.assert_close(out.edge_attr, lam * g.edge_attr + (1 - lam) * partner.edge_attr)
        torch.testing.assert_close(out.x, lam * g.x + (1 - lam) * partner.x)
    if mode == 'align':
        aligned = align(g, partner)
        torch.testing.assert_close(out.edge_attr, lam * g.edge_attr + (1 - lam) * aligned.edge_attr)
        torch.testing.assert_close(out.x, lam * g.x + (1 - lam) * aligned.x)


def test_random_coefficients_and_labels():
    torch.manual_seed(0)
    g = graph(seed=1, y=1)
    for alpha in (None, 0.2, 2.0):
        t = WeightMixUp(SOURCE, 'permute', alpha)
        ys = torch.cat([t(g).y for _ in range(40)])
        torch.testing.assert_close(ys.sum(1), torch.ones(40))
        assert (ys >= 0).all() and ys[:, 1].std() > 0.05   # lam varies
    torch.manual_seed(3)
    a = WeightMixUp(SOURCE, 'align', 0.4)(g)
    torch.manual_seed(3)
    b = WeightMixUp(SOURCE, 'align', 0.4)(g)
    assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.y, b.y)


def test_soft_sample_label_and_unlabelled_sample():
    g = graph(seed=1, y=None)
    g.y = torch.tensor([[0.5, 0.25, 0.25]])
    out = WeightMixUp([graph(seed=2, y=2)], lam=0.5)(g)
    torch.testing.assert_close(out.y, torch.tensor([[0.25, 0.125, 0.625]]))
    out = WeightMixUp([graph(seed=2, y=2)], lam=0.5)(graph(seed=1, y=None))
    assert getattr(out, 'y', None) is None


def test_other_architectures_are_skipped():
    partner = graph(seed=3, y=1)
    source = [graph((2, 5, 1), seed=4, y=0), partner, graph(SIZES, 'tanh', seed=5, y=0),
              graph((2, 12, 12, 12, 1), seed=6, y=2)]
    t = WeightMixUp(source, 'vanilla', lam=0.0)
    assert t.num_classes == 3
    for _ in range(5):
        assert torch.equal(t(graph(seed=1)).edge_attr, partner.edge_attr)


def test_refusals():
    with pytest.raises(ValueError, match=r'no graph in source.*\(2, 12, 12, 1\)'):
        WeightMixUp([graph((2, 5, 1))])(graph())
    with pytest.raises(ValueError, match="relu"):
        WeightMixUp([graph(activation='relu')], 'align', signs=True)(graph(activation='relu'))
    with pytest.raises(ValueError, match='signs=True needs'):
        WeightMixUp(SOURCE, 'permute', signs=True)
    with pytest.raises(ValueError, match='mode'):
        WeightMixUp(SOURCE, 'average')
    with pytest.raises(ValueError, match='alpha'):
        WeightMixUp(SOURCE, alpha=0.0)
    with pytest.raises(ValueError, match='lam'):
        WeightMixUp(SOURCE, lam=1.5)
    with pytest.raises(ValueError, match='no graphs'):
        WeightMixUp([])
    with pytest.raises(TypeError, match='source item 1'):
        WeightMixUp([graph(), torch.zeros(3)])
    with pytest.raises(ValueError, match='outside'):
        WeightMixUp(SOURCE)(graph(y=7))
    with pytest.raises(ValueError, match='source graphs do not'):
        WeightMixUp([graph(y=None)])(graph(y=1))


@pytest.mark.parametrize('mode', ['vanilla', 'align'])
def test_batch_equals_per_sample(mode):
    # one partner and a fixed coefficient: both paths are deterministic
    partner = graph(seed=9, y=1)
    graphs = [graph(seed=s, y=s % 3) for s in range(6)]
    batch = Batch.from_data_list(graphs)
    snap = snapshot(batch)
    t = WeightMixUp([partner], mode, signs=mode == 'align', lam=0.35, num_classes=3)
    out = t(batch)
    assert isinstance(out, Batch) and same(batch, snap)
    assert out.y.shape == (6, 3)
    expected = Batch.from_data_list([t(g) for g in graphs])
    torch.testing.assert_close(out.edge_attr, expected.edge_attr)
    torch.testing.assert_close(out.x, expected.x)
    torch.testing.assert_close(out.y, expected.y)


@pytest.mark.parametrize('mode', MODES)
def test_batch_path_at_the_ends(mode):
    graphs = [graph(seed=s, y=s % 3, dtype=torch.float64) for s in range(5)]
    partner = graph(seed=30, y=2, dtype=torch.float64)
    batch = Batch.from_data_list(graphs)
    t1 = WeightMixUp([partner], mode, lam=1.0)
    out = t1(batch)
    assert torch.equal(out.edge_attr, batch.edge_attr) and torch.equal(out.x, batch.x)
    assert torch.equal(out.y.argmax(1), batch.y)
    out = WeightMixUp([partner], mode, lam=0.0)(batch)
    x = torch.rand(30, 2, dtype=torch.float64)
    torch.testing.assert_close(forward(out, x), forward(partner, x).expand(5, -1, -1),
                               rtol=1e-10, atol=1e-10)
    # random coefficients: every row of the label still sums to one
    torch.manual_seed(0)
    out = WeightMixUp(SOURCE, mode, alpha=0.5, num_classes=3)(Batch.from_data_list(
        [graph(seed=s, y=s % 3) for s in range(8)]))
    torch.testing.assert_close(out.y.sum(1), torch.ones(8))


def test_batch_refuses_mixed_architectures():
    batch = Batch.from_data_list([graph(), graph((2, 5, 1))])
    with pytest.raises(ValueError, match='architecture'):
        WeightMixUp(SOURCE)(batch)


class _Graphs(InMemoryDataset):
    def __init__(self, graphs, transform=None):
        super().__init__(None, transform=transform)
        self.data, self.slices = self.collate(graphs)


def test_dataset_source_with_itself_as_transform_in_workers():
    graphs = [graph(seed=s, y=s % 3) for s in range(8)]
    ds = _Graphs(graphs)
    ds.transform = T.Compose([WeightMixUp(ds, 'align', alpha=0.4)])   # no recursion: read raw
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2
    for b in batches:
        assert b.y.shape == (4, 3)
        torch.testing.assert_close(b.y.sum(1), torch.ones(4))


def test_repr():
    assert repr(WeightMixUp(SOURCE, 'align', 0.2, signs=True)) == \
        "WeightMixUp(mode='align', alpha=0.2, signs=True, num_classes=3)"


@pytest.mark.parametrize('alpha', [0.2, 1.0, 4.0])
def test_beta_coefficients_have_the_beta_moments(alpha):
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    torch.manual_seed(0)
    lam = sample_lam(alpha, (40000,))
    assert ((lam >= 0) & (lam <= 1)).all()
    assert abs(float(lam.mean()) - 0.5) < 0.01
    assert abs(float(lam.var()) - 1 / (4 * (2 * alpha + 1))) < 0.01
    lam_u = sample_lam(None, (40000,))
    assert abs(float(lam_u.var()) - 1 / 12) < 0.005
