import random

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import layer_views
from nngraph.transforms import CanonicalSigns, RandomSignFlip


@pytest.mark.parametrize('by', ['bias', 'out'])
@pytest.mark.parametrize('activation', ['sine:30.0', 'tanh'])
def test_preserves_function_on_random_architectures(by, activation, kit):
    rng = random.Random(3)
    for _ in range(6):
        g = kit.make_graph(kit.random_sizes(rng), activation)
        kit.assert_same_function(g, CanonicalSigns(by)(g))


@pytest.mark.parametrize('by', ['bias', 'out'])
def test_every_sign_flipped_copy_gets_the_same_graph(by, kit):
    g = kit.make_graph((2, 16, 12, 8, 1), 'sine:30.0')
    reference = CanonicalSigns(by)(g)
    for seed in range(5):
        torch.manual_seed(seed)
        flipped = RandomSignFlip(p=0.5)(g)
        assert not torch.equal(flipped.edge_attr, g.edge_attr)    # the flip changed the graph
        out = CanonicalSigns(by)(flipped)
        assert torch.equal(out.edge_attr, reference.edge_attr) and torch.equal(out.x, reference.x)


def test_criteria_hold_after_canonicalisation(kit):
    g = kit.make_graph((2, 16, 12, 1), 'tanh')
    biases = layer_views(CanonicalSigns('bias')(g))[1]
    assert all(bool((b[..., 0] >= 0).all()) for b in biases[:-1])
    weights = layer_views(CanonicalSigns('out')(g))[0]
    assert all(bool((w[..., 0].sum(0) >= 0).all()) for w in weights[1:])


@pytest.mark.parametrize('by', ['bias', 'out'])
def test_batch_equals_each_graph(by, kit):
    graphs = [kit.make_graph((2, 8, 8, 1), 'sine:30.0') for _ in range(5)]
    batch = CanonicalSigns(by)(Batch.from_data_list(graphs))
    for i, g in enumerate(graphs):
        assert torch.equal(batch.get_example(i).edge_attr, CanonicalSigns(by)(g).edge_attr)


def test_refuses_even_activations_and_unknown_rules(kit):
    with pytest.raises(ValueError, match='CanonicalSigns needs an odd activation'):
        CanonicalSigns()(kit.make_graph((2, 4, 1), 'relu'))
    with pytest.raises(ValueError, match="by must be one of"):
        CanonicalSigns('norm')
