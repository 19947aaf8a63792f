import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import layer_views
from nngraph.transforms import WeightDropout


def test_zeroes_a_fraction_p_and_keeps_the_rest(kit):
    g = kit.make_graph((2, 64, 64, 1), 'relu')
    h = WeightDropout(0.3)(g)
    dropped = h.edge_attr == 0
    assert abs(float(dropped.float().mean()) - 0.3) < 0.03
    kept = ~dropped
    assert torch.equal(h.edge_attr[kept], g.edge_attr[kept])     # not rescaled
    assert torch.equal(h.x, g.x)                                  # biases kept
    assert torch.equal(h.edge_index, g.edge_index)                # structure kept


def test_p_zero_and_one(kit):
    g = kit.make_graph((2, 16, 1))
    assert torch.equal(WeightDropout(0.0)(g).edge_attr, g.edge_attr)
    assert not WeightDropout(1.0)(g).edge_attr.any()


def test_masks_are_independent_per_graph(kit):
    g = kit.make_graph((2, 32, 1))
    out = WeightDropout(0.5)(Batch.from_data_list([g] * 2)).to_data_list()
    assert not torch.equal(out[0].edge_attr == 0, out[1].edge_attr == 0)


def test_bad_p():
    with pytest.raises(ValueError, match='WeightDropout: p must be in'):
        WeightDropout(-0.1)
