import pytest
import torch
from torch_geometric.data import Batch

from nngraph.transforms import LabelSmoothing


def test_hard_label_becomes_smoothed_soft_label(kit):
    g = kit.make_graph((2, 4, 1), y=torch.tensor([2]))
    snap = kit.snapshot(g)
    h = LabelSmoothing(0.1, 4)(g)
    kit.assert_unchanged(g, snap)
    assert h.y.shape == (1, 4) and h.y.dtype.is_floating_point
    torch.testing.assert_close(h.y, torch.tensor([[0.025, 0.025, 0.925, 0.025]]))
    torch.testing.assert_close(h.y.sum(-1), torch.ones(1))
    assert torch.equal(h.edge_attr, g.edge_attr)


def test_soft_label_stays_soft_and_is_smoothed(kit):
    soft = torch.tensor([[0.7, 0.3, 0.0]])
    h = LabelSmoothing(0.3, 3)(kit.make_graph((2, 4, 1), y=soft))
    torch.testing.assert_close(h.y, 0.7 * soft + 0.1)
    torch.testing.assert_close(h.y.sum(-1), torch.ones(1))


def test_smoothing_a_one_hot_equals_smoothing_the_hard_label(kit):
    t = LabelSmoothing(0.2, 5)
    hard = t(kit.make_graph((2, 3, 1), y=torch.tensor([3])))
    soft = t(kit.make_graph((2, 3, 1), y=torch.nn.functional.one_hot(torch.tensor([3]), 5).float()))
    torch.testing.assert_close(hard.y, soft.y)


def test_batch_equals_per_graph_and_splits_back(kit):
    graphs = [kit.make_graph((2, 3, 1), y=torch.tensor([c])) for c in (0, 2, 1)]
    t = LabelSmoothing(0.1, 3)
    out = t(Batch.from_data_list(graphs))
    assert out.y.shape == (3, 3)
    for g, h in zip(graphs, out.to_data_list()):
        assert torch.equal(h.y, t(g).y)


def test_errors(kit):
    with pytest.raises(ValueError, match=r'class labels must lie in \[0, 3\)'):
        LabelSmoothing(0.1, 3)(kit.make_graph((2, 3, 1), y=torch.tensor([3])))
    with pytest.raises(ValueError, match=r'soft labels must have shape \[1, 3\]'):
        LabelSmoothing(0.1, 3)(kit.make_graph((2, 3, 1), y=torch.ones(1, 4) / 4))
    g = kit.make_graph((2, 3, 1))
    del g.y
    with pytest.raises(ValueError, match='LabelSmoothing: the graph has no label y'):
        LabelSmoothing(0.1, 3)(g)
    with pytest.raises(ValueError, match='eps must be in'):
        LabelSmoothing(1.5, 3)
    with pytest.raises(ValueError, match='num_classes must be an integer >= 2'):
        LabelSmoothing(0.1, 1)
