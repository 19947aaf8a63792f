import math
import random

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.activations import get, per_layer
from nngraph.graph import forward, from_weights, layer_views
from nngraph.transforms import CanonicalSigns, RandomSignFlip, SirenBiasFold, SirenBiasShift

ACTIVATIONS = ['sine:30.0', 'sine:7.5', ('sine:30.0', 'sine:10.0', 'identity')]


def spread_graph(sizes, activation='sine:30.0', dtype=torch.float64):
    """A SIREN-like network whose hidden biases span several half periods in
    every layer (SIREN init keeps deeper biases inside one, where the fold
    would have nothing to do)."""
    weights = [torch.empty(b, a, dtype=dtype).uniform_(-1, 1) / a for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [torch.empty(d, dtype=dtype).uniform_(-1.5, 1.5) for d in sizes[1:]]
    return from_weights(weights, biases, activation)


def sizes_of(activation, rng):
    return (2, rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 3)) if isinstance(activation, tuple) \
        else (rng.choice((1, 2, 3)), *[rng.randint(1, 9) for _ in range(rng.randint(1, 3))], rng.randint(1, 3))


def half_periods(g):
    acts = per_layer(g.activation, len(g.layer_sizes) - 1)
    return [get(a).half_period for a in acts[:-1]]


def grid(d, n=9):
    axes = torch.linspace(-1, 1, n, dtype=torch.float64)
    return torch.cartesian_prod(*[axes] * d).reshape(-1, d)


def assert_same_graph(a, b):
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.edge_attr, b.edge_attr, rtol=0, atol=1e-12)


@pytest.mark.parametrize('activation', ACTIVATIONS, ids=str)
def test_preserves_function_on_a_grid(activation):
    rng = random.Random(3)
    for _ in range(5):
        g = spread_graph(sizes_of(activation, rng), activation)
        h = SirenBiasFold()(g)
        assert not torch.equal(h.x, g.x)            # the fold moved biases: the test proves something
        x = grid(g.layer_sizes[0])
        torch.testing.assert_close(forward(h, x), forward(g, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize('activation', ACTIVATIONS, ids=str)
def test_hidden_biases_land_in_one_centred_half_period(activation):
    rng = random.Random(4)
    for _ in range(5):
        g = SirenBiasFold()(spread_graph(sizes_of(activation, rng), activation))
        biases = layer_views(g)[1]
        for b, h in zip(biases[:-1], half_periods(g)):
            assert bool((b[:, 0] >= -h / 2).all()) and bool((b[:, 0] < h / 2).all()), (b[:, 0], h)


def test_fold_is_k_half_periods_and_a_sign_per_odd_k():
    h = math.pi / 20.0
    g = from_weights([torch.ones(5, 2, dtype=torch.float64), torch.ones(1, 5, dtype=torch.float64)],
                     [torch.tensor([0.0, h / 2, -h / 2, 3 * h + 0.1 * h, -1.25 * h], dtype=torch.float64),
                      torch.zeros(1, dtype=torch.float64)], 'sine:20.0')
    (w, _), (v, c) = layer_views(g), layer_views(SirenBiasFold()(g))
    # +h/2 is the open end: it folds to -h/2 with one flip; -h/2 stays
    torch.testing.assert_close(c[0][:, 0], torch.tensor([0.0, -h / 2, -h / 2, 0.1 * h, -0.25 * h],
                                                        dtype=torch.float64))
    assert torch.equal(v[0], w[0])
    assert torch.equal(v[1][0, :, 0], torch.tensor([1.0, -1, 1, -1, -1], dtype=torch.float64))


@pytest.mark.parametrize('activation', ACTIVATIONS, ids=str)
def test_every_bias_shifted_copy_folds_to_the_same_graph(activation):
    rng = random.Random(5)
    for seed in range(6):
        torch.manual_seed(seed)
        g = spread_graph(sizes_of(activation, rng), activation)
        shifted = SirenBiasShift(k_max=rng.randint(1, 3))(g)
        assert_same_graph(SirenBiasFold()(shifted), SirenBiasFold()(g))


@pytest.mark.parametrize('by', ['bias', 'out'])
@pytest.mark.parametrize('activation', ACTIVATIONS, ids=str)
def test_with_canonical_signs_one_graph_per_orbit_of_flips_and_shifts(by, activation):
    rng = random.Random(6)
    canonical = lambda g: CanonicalSigns(by)(SirenBiasFold()(g))
    for seed in range(6):
        torch.manual_seed(seed)
        g = spread_graph(sizes_of(activation, rng), activation)
        moved = RandomSignFlip(0.5)(SirenBiasShift(k_max=rng.randint(1, 3))(g))
        assert not torch.equal(moved.x, g.x)
        assert_same_graph(canonical(moved), canonical(g))


def test_batch_equals_each_graph_and_input_unchanged(kit):
    graphs = [spread_graph((2, 8, 6, 1), ('sine:30.0', 'sine:10.0', 'identity')) for _ in range(4)]
    batch = Batch.from_data_list(graphs)
    snap = kit.snapshot(batch)
    kit.assert_batch_matches_graphs(SirenBiasFold(), batch)
    out = SirenBiasFold()(batch)
    kit.assert_unchanged(batch, snap)
    for i, g in enumerate(graphs):
        single = SirenBiasFold()(g)
        assert torch.equal(out.get_example(i).edge_attr, single.edge_attr)
        assert torch.equal(out.get_example(i).x, single.x)
    # a batch of mixed architectures takes the per-graph fallback: the same graphs
    mixed = [spread_graph((2, 5, 1)), spread_graph((2, 3, 4, 1))]
    for got, g in zip(SirenBiasFold()(Batch.from_data_list(mixed)).to_data_list(), mixed):
        assert torch.equal(got.edge_attr, SirenBiasFold()(g).edge_attr) and torch.equal(got.x, SirenBiasFold()(g).x)


@pytest.mark.parametrize('activation', ['relu', 'tanh', ('sine:30.0', 'tanh', 'identity')], ids=str)
def test_refuses_non_sine(activation, kit):
    g = kit.make_graph((2, 4, 4, 1), activation)
    with pytest.raises(ValueError, match=r"SirenBiasFold needs a sine activation.*'(tanh|relu)'"):
        SirenBiasFold()(g)


def test_repr():
    assert repr(SirenBiasFold()) == 'SirenBiasFold()'
