import random

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import forward, layer_views
from nngraph.transforms import RandomPositiveScaling


@pytest.mark.parametrize('activation', ['relu', 'leaky_relu:0.01', 'leaky_relu:0.2',
                                        ('relu', 'leaky_relu:0.1', 'identity')], ids=str)
def test_preserves_function_on_random_architectures(activation, kit):
    rng = random.Random(4)
    for _ in range(6):
        sizes = kit.random_sizes(rng) if isinstance(activation, str) else (3, 5, 6, 2)
        g = kit.make_graph(sizes, activation)
        kit.assert_same_function(g, RandomPositiveScaling(0.25, 4.0)(g))


@pytest.mark.parametrize('activation', ['tanh', 'sine:30.0', 'gelu', 'silu', 'sigmoid'])
def test_refuses_non_homogeneous(activation, kit):
    g = kit.make_graph((2, 4, 1), activation)
    with pytest.raises(ValueError, match=rf"RandomPositiveScaling needs a positively homogeneous "
                                         rf"activation.*'{activation}'"):
        RandomPositiveScaling(0.5, 2.0)(g)


def test_fixed_factor_scales_in_and_divides_out(kit):
    g = kit.make_graph((2, 5, 1), 'relu')
    h = RandomPositiveScaling(3.0, 3.0)(g)
    (w, b), (v, c) = layer_views(g), layer_views(h)
    torch.testing.assert_close(v[0], 3 * w[0])
    torch.testing.assert_close(c[0], 3 * b[0])
    torch.testing.assert_close(v[1], w[1] / 3)
    assert torch.equal(c[1], b[1])


def test_factors_lie_in_range(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 64, 1), 'relu')] * 20)
    c = RandomPositiveScaling(0.5, 2.0).sample(batch)[0]
    assert float(c.min()) >= 0.5 and float(c.max()) <= 2.0 and float(c.std()) > 0.3


def test_batch_preserves_every_function(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 16, 16, 1), 'relu') for _ in range(8)])
    x = kit.inputs(2)
    kit.assert_close_f32(forward(RandomPositiveScaling(0.5, 2.0)(batch), x), forward(batch, x))


@pytest.mark.parametrize('low, high', [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_range(low, high):
    with pytest.raises(ValueError, match='RandomPositiveScaling: need 0 < low <= high'):
        RandomPositiveScaling(low, high)
