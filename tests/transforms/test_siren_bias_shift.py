import math
import random

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import forward, layer_views
from nngraph.transforms import SirenBiasShift


@pytest.mark.parametrize('activation', ['sine:30.0', 'sine:1.0', 'sine:7.5',
                                        ('sine:30.0', 'sine:10.0', 'identity')], ids=str)
@pytest.mark.parametrize('k_max', [1, 3])
def test_preserves_function_on_random_architectures(activation, k_max, kit):
    rng = random.Random(3)
    for _ in range(5):
        sizes = kit.random_sizes(rng) if isinstance(activation, str) else (2, 6, 7, 1)
        g = kit.make_graph(sizes, activation)
        kit.assert_same_function(g, SirenBiasShift(k_max=k_max)(g))


@pytest.mark.parametrize('activation', ['tanh', 'relu', ('sine:30.0', 'tanh', 'identity')], ids=str)
def test_refuses_non_sine(activation, kit):
    g = kit.make_graph((2, 4, 4, 1), activation)
    with pytest.raises(ValueError, match=r"SirenBiasShift needs a sine activation.*'(tanh|relu)'"):
        SirenBiasShift()(g)


def test_shift_is_k_half_periods_in_units_of_z(kit):
    # sine:w0 means sin(w0 * z): half period pi / w0
    g = kit.make_graph((2, 4, 1), 'sine:20.0')
    k = [torch.tensor([-2, -1, 0, 3])]
    h = SirenBiasShift(k_max=3).apply(g, k)
    (w, b), (v, c) = layer_views(g), layer_views(h)
    torch.testing.assert_close(c[0][:, 0], b[0][:, 0] + k[0].float() * math.pi / 20.0)
    assert torch.equal(v[0], w[0])
    assert torch.equal(v[1][0, :, 0], w[1][0, :, 0] * torch.tensor([1., -1, 1, -1]))
    kit.assert_same_function(g, h)


def test_even_shift_without_flip_and_odd_with_flip_would_fail(kit):
    # the test of function preservation can fail: shifting by one half period
    # without flipping the outgoing weights changes the function
    g = kit.make_graph((2, 8, 1), 'sine:30.0')
    w, b = layer_views(g)
    from nngraph.graph import with_layers
    wrong = with_layers(g, w, [b[0] + math.pi / 30.0, b[1]])
    x = kit.inputs(2)
    assert float((forward(wrong, x) - forward(g, x)).abs().max()) > 100 * kit.tol


def test_k_range_is_symmetric_and_complete(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 64, 1))] * 50)
    k = SirenBiasShift(k_max=2).sample(batch)[0]
    counts = torch.bincount(k.flatten() + 2)
    assert counts.numel() == 5 and float((counts / k.numel() - 0.2).abs().max()) < 0.03


def test_k_max_zero_is_identity(kit):
    g = kit.make_graph((2, 8, 1))
    h = SirenBiasShift(k_max=0)(g)
    assert torch.equal(h.x, g.x) and torch.equal(h.edge_attr, g.edge_attr)


def test_bad_k_max():
    with pytest.raises(ValueError, match='k_max must be a non-negative integer'):
        SirenBiasShift(k_max=-1)
    with pytest.raises(ValueError, match='k_max must be a non-negative integer'):
        SirenBiasShift(k_max=1.5)
