import random

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import forward, layer_views
from nngraph.transforms import RandomSignFlip


@pytest.mark.parametrize('activation', ['sine:30.0', 'sine:1.0', 'tanh',
                                        ('tanh', 'sine:30.0', 'identity')], ids=str)
def test_preserves_function_on_random_architectures(activation, kit):
    rng = random.Random(2)
    for _ in range(6):
        sizes = kit.random_sizes(rng) if isinstance(activation, str) else (3, 6, 7, 2)
        g = kit.make_graph(sizes, activation)
        kit.assert_same_function(g, RandomSignFlip(p=0.5)(g))


@pytest.mark.parametrize('activation', ['relu', 'sigmoid', 'gelu', 'leaky_relu:0.01',
                                        ('tanh', 'relu', 'identity')], ids=str)
def test_refuses_activations_that_are_not_odd(activation, kit):
    g = kit.make_graph((2, 4, 4, 1), activation)
    with pytest.raises(ValueError, match=r"RandomSignFlip needs an odd activation.*'(relu|sigmoid|gelu|leaky_relu:0.01)'"):
        RandomSignFlip()(g)


def test_flips_incoming_bias_and_outgoing_together(kit):
    g = kit.make_graph((2, 8, 1), 'tanh')
    signs = [torch.tensor([1., -1, 1, 1, -1, -1, 1, 1])]
    h = RandomSignFlip().apply(g, signs)
    (w, b), (v, c) = layer_views(g), layer_views(h)
    assert torch.equal(v[0], w[0] * signs[0][:, None, None])
    assert torch.equal(c[0], b[0] * signs[0][:, None])
    assert torch.equal(v[1], w[1] * signs[0][None, :, None])
    assert torch.equal(c[1], b[1])


def test_p_zero_is_identity_and_p_one_flips_all(kit):
    g = kit.make_graph((2, 8, 8, 1), 'sine:30.0')
    assert torch.equal(RandomSignFlip(p=0.0)(g).edge_attr, g.edge_attr)
    h = RandomSignFlip(p=1.0)(g)
    (w, b), (v, c) = layer_views(g), layer_views(h)
    assert torch.equal(v[0], -w[0]) and torch.equal(c[0], -b[0]) and torch.equal(v[2], -w[2])
    assert torch.equal(v[1], w[1])      # flipped twice: rows and columns


def test_flip_rate_is_p(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 50, 1), 'tanh')] * 40)
    signs = RandomSignFlip(p=0.3).sample(batch)[0]
    assert abs(float((signs < 0).float().mean()) - 0.3) < 0.03


def test_batch_preserves_every_function(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 16, 16, 1), 'sine:30.0') for _ in range(8)])
    x = kit.inputs(2)
    kit.assert_close_f32(forward(RandomSignFlip()(batch), x), forward(batch, x))


def test_bad_p():
    with pytest.raises(ValueError, match='RandomSignFlip: p must be in'):
        RandomSignFlip(1.5)
