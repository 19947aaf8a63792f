"""Properties every transform shares: input graph unchanged, reproducible under
torch.manual_seed, batch path == per-graph path under the same draws,
independent draws per graph, the mixed-batch fallback, a readable repr."""
import random

import pytest
import torch
from torch_geometric.data import Batch

import nngraph.transforms as T
import torch_geometric.transforms as PyGT
from nngraph.graph import forward
from nngraph.transforms._base import select_graph

# (transform, activation it is valid for, input dimension)
CASES = [
    (T.RandomNeuronPermutation(), 'relu', 2),
    (T.RandomSignFlip(p=0.5), 'sine:30.0', 2),
    (T.SirenBiasShift(k_max=3), 'sine:30.0', 2),
    (T.RandomPositiveScaling(0.5, 2.0), 'relu', 2),
    (T.InputRotation(45), 'sine:30.0', 2),
    (T.InputRotation((-30, 60)), 'sine:30.0', 3),
    (T.InputTranslation(0.5), 'sine:30.0', 3),
    (T.InputScaling(0.5, 2.0), 'sine:30.0', 2),
    (T.WeightNoise(0.1), 'sine:30.0', 2),
    (T.WeightDropout(0.3), 'relu', 2),
    (T.QuantileZeroing(0.5), 'sine:30.0', 2),
]
IDS = [repr(t) + f'-{a}-{d}d' for t, a, d in CASES]
SIZES = lambda d: (d, 16, 16, 1)


@pytest.mark.parametrize('transform, act, d', CASES, ids=IDS)
def test_input_graph_unchanged(transform, act, d, kit):
    g = kit.make_graph(SIZES(d), act)
    snap = kit.snapshot(g)
    out = transform(g)
    kit.assert_unchanged(g, snap)
    assert not torch.equal(out.edge_attr, g.edge_attr) or not torch.equal(out.x, g.x)
    batch = Batch.from_data_list([kit.make_graph(SIZES(d), act) for _ in range(3)])
    snap = kit.snapshot(batch)
    transform(batch)
    kit.assert_unchanged(batch, snap)


@pytest.mark.parametrize('transform, act, d', CASES, ids=IDS)
def test_reproducible_under_manual_seed(transform, act, d, kit):
    g = kit.make_graph(SIZES(d), act)
    batch = Batch.from_data_list([g, g])
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append((transform(g), transform(batch)))
    (a, ab), (b, bb), (c, cb) = runs
    assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.x, b.x)
    assert torch.equal(ab.edge_attr, bb.edge_attr) and torch.equal(ab.x, bb.x)
    assert not (torch.equal(a.edge_attr, c.edge_attr) and torch.equal(a.x, c.x))


@pytest.mark.parametrize('transform, act, d', CASES, ids=IDS)
def test_batch_path_equals_per_graph_path(transform, act, d, kit):
    batch = Batch.from_data_list([kit.make_graph(SIZES(d), act) for _ in range(5)])
    kit.assert_batch_matches_graphs(transform, batch)


@pytest.mark.parametrize('transform, act, d', CASES, ids=IDS)
def test_batch_draws_are_independent_per_graph(transform, act, d, kit):
    g = kit.make_graph(SIZES(d), act)
    out = transform(Batch.from_data_list([g] * 4)).to_data_list()
    # identical inputs, yet no two graphs transformed alike
    for i in range(1, 4):
        assert not (torch.equal(out[0].edge_attr, out[i].edge_attr) and torch.equal(out[0].x, out[i].x))


@pytest.mark.parametrize('transform, act, d', CASES, ids=IDS)
def test_batch_keeps_structure(transform, act, d, kit):
    batch = Batch.from_data_list([kit.make_graph(SIZES(d), act) for _ in range(3)])
    out = transform(batch)
    assert isinstance(out, Batch) and out.num_graphs == 3
    for key in ('edge_index', 'layer', 'batch', 'ptr', 'y'):
        assert torch.equal(out[key], batch[key])
    assert out.edge_attr.shape == batch.edge_attr.shape and out.x.shape == batch.x.shape
    assert out.layer_sizes == batch.layer_sizes and out.activation == batch.activation
    # input-layer node features (zeros) are kept
    assert torch.equal(out.x[out.layer == 0], batch.x[batch.layer == 0])


def test_mixed_batch_falls_back_per_graph(kit):
    rng = random.Random(0)
    graphs = [kit.make_graph(kit.random_sizes(rng, d_in=(2,)), 'sine:30.0') for _ in range(4)]
    graphs.append(kit.make_graph((2, 5, 1), 'tanh'))
    batch = Batch.from_data_list(graphs)
    snap = kit.snapshot(batch)
    transform = PyGT.Compose([T.RandomNeuronPermutation(), T.RandomSignFlip(), T.InputRotation((30, 30))])
    out = transform(batch)
    kit.assert_unchanged(batch, snap)
    x = kit.inputs(2)
    rot = torch.tensor([[3 ** 0.5 / 2, -0.5], [0.5, 3 ** 0.5 / 2]])
    for g, h in zip(graphs, out.to_data_list()):
        kit.assert_close_f32(forward(h, x), forward(g, x @ rot.T))


def test_mixed_batch_refuses_what_any_graph_refuses(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 4, 1), 'sine:30.0'),
                                  kit.make_graph((2, 5, 1), 'relu')])
    with pytest.raises(ValueError, match=r"RandomSignFlip.*'relu'"):
        T.RandomSignFlip()(batch)


def test_sample_on_mixed_batch_is_a_clear_error(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 4, 1)), kit.make_graph((2, 5, 1))])
    with pytest.raises(ValueError, match='one architecture and activation'):
        T.RandomNeuronPermutation().sample(batch)


def test_same_architecture_different_activation_uses_fallback(kit):
    # sine:30 and sine:10 differ in half period: each graph must get its own
    graphs = [kit.make_graph((2, 6, 1), 'sine:30.0'), kit.make_graph((2, 6, 1), 'sine:10.0')]
    out = T.SirenBiasShift(k_max=2)(Batch.from_data_list(graphs)).to_data_list()
    for g, h in zip(graphs, out):
        kit.assert_same_function(g, h)


def test_select_graph_keeps_nesting():
    params = ([torch.arange(6).view(3, 2), None], torch.arange(3))
    assert select_graph(params, 1)[0][0].tolist() == [2, 3]
    assert select_graph(params, 1)[0][1] is None
    assert int(select_graph(params, 2)[1]) == 2


def test_non_graph_input_is_a_clear_error():
    from torch_geometric.data import Data
    with pytest.raises(ValueError, match='needs a parameter graph'):
        T.WeightNoise(0.1)(Data(x=torch.zeros(3, 1)))


@pytest.mark.parametrize('transform, text', [
    (T.RandomNeuronPermutation(), 'RandomNeuronPermutation()'),
    (T.RandomSignFlip(0.25), 'RandomSignFlip(p=0.25)'),
    (T.SirenBiasShift(2), 'SirenBiasShift(k_max=2)'),
    (T.RandomPositiveScaling(0.5, 2), 'RandomPositiveScaling(low=0.5, high=2.0)'),
    (T.InputRotation(10), 'InputRotation(degrees=(-10.0, 10.0))'),
    (T.InputRotation((5, 5), axis=(0, 0, 1)), 'InputRotation(degrees=(5.0, 5.0), axis=(0.0, 0.0, 1.0))'),
    (T.InputTranslation(0.1), 'InputTranslation(max_shift=0.1)'),
    (T.InputScaling(0.5, 1.5), 'InputScaling(low=0.5, high=1.5)'),
    (T.WeightNoise(0.01), 'WeightNoise(std=0.01)'),
    (T.WeightDropout(0.1), 'WeightDropout(p=0.1)'),
    (T.QuantileZeroing(0.2), 'QuantileZeroing(max_quantile=0.2)'),
    (T.LabelSmoothing(0.1, 10), 'LabelSmoothing(eps=0.1, num_classes=10)'),
])
def test_repr_shows_arguments(transform, text):
    assert repr(transform) == text


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('transform, act, d', CASES, ids=IDS)
def test_batch_path_runs_on_cuda(transform, act, d, kit):
    batch = Batch.from_data_list([kit.make_graph(SIZES(d), act) for _ in range(4)]).to('cuda')
    out = transform(batch)
    assert out.edge_attr.device.type == 'cuda' and out.x.device.type == 'cuda'
    assert torch.isfinite(out.edge_attr).all() and torch.isfinite(out.x).all()


@pytest.mark.parametrize('transform, act, d', CASES, ids=IDS)
def test_no_hidden_layer_and_float64(transform, act, d, kit):
    # a single linear layer has no hidden neurons: symmetries are the identity
    g = kit.make_graph((d, 3), act)
    out = transform(g)
    assert out.edge_attr.shape == g.edge_attr.shape
    out = transform(Batch.from_data_list([g, g]))
    assert out.num_graphs == 2
    # float64 graphs stay float64
    g64 = kit.make_graph(SIZES(d), act, dtype=torch.float64)
    out = transform(g64)
    assert out.edge_attr.dtype == torch.float64 and out.x.dtype == torch.float64
    assert transform(Batch.from_data_list([g64, g64])).edge_attr.dtype == torch.float64
