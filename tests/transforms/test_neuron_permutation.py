import random

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import forward, layer_views
from nngraph.transforms import RandomNeuronPermutation

ACTIVATIONS = ['relu', 'leaky_relu:0.01', 'tanh', 'sigmoid', 'gelu', 'silu', 'sine:30.0',
               ('tanh', 'sine:10.0', 'relu', 'identity')]


@pytest.mark.parametrize('activation', ACTIVATIONS, ids=str)
def test_preserves_function_on_random_architectures(activation, kit):
    rng = random.Random(1)
    for _ in range(6):
        sizes = kit.random_sizes(rng) if isinstance(activation, str) else (2, 7, 5, 6, 1)
        g = kit.make_graph(sizes, activation)
        kit.assert_same_function(g, RandomNeuronPermutation()(g))


def test_moves_weights_without_changing_them(kit):
    g = kit.make_graph((3, 8, 8, 2), 'relu')
    h = RandomNeuronPermutation()(g)
    (w, b), (v, c) = layer_views(g), layer_views(h)
    # each hidden layer's bias multiset is kept and actually reordered
    for l in range(2):
        assert torch.equal(b[l].sort(0).values, c[l].sort(0).values)
        assert not torch.equal(b[l], c[l])
    # the output bias is untouched, and every weight survives (only moved)
    assert torch.equal(b[2], c[2])
    assert torch.equal(g.edge_attr.sort(0).values, h.edge_attr.sort(0).values)


def test_sampled_permutations_are_permutations(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 9, 4, 1)) for _ in range(6)])
    perms = RandomNeuronPermutation().sample(batch)
    assert [p.shape for p in perms] == [(6, 9), (6, 4)]
    for p, d in zip(perms, (9, 4)):
        assert torch.equal(p.sort(-1).values, torch.arange(d).expand(6, d))


def test_batch_preserves_every_function(kit):
    graphs = [kit.make_graph((2, 16, 16, 1), 'sine:30.0') for _ in range(8)]
    batch = Batch.from_data_list(graphs)
    x = kit.inputs(2)
    kit.assert_close_f32(forward(RandomNeuronPermutation()(batch), x), forward(batch, x))


def test_first_permutation_is_uniform():
    # 3 neurons: all 6 permutations, each about 1/6 of the time
    from nngraph.graph import from_weights
    g = from_weights([torch.randn(3, 1), torch.randn(1, 3)], activation='relu')
    batch = Batch.from_data_list([g] * 6000)
    perms = RandomNeuronPermutation().sample(batch)[0]
    code = perms[:, 0] * 9 + perms[:, 1] * 3 + perms[:, 2]
    counts = torch.bincount(code, minlength=27)
    counts = counts[counts > 0]
    assert counts.numel() == 6
    assert float((counts / 6000 - 1 / 6).abs().max()) < 0.03
