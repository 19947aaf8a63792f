import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import from_weights, layer_views
from nngraph.transforms import QuantileZeroing


@pytest.mark.parametrize('q', [0.0, 0.1, 0.37, 0.5, 0.999])
def test_zeroes_the_floor_q_n_smallest_of_each_layer(q, kit):
    g = kit.make_graph((2, 20, 30, 3), 'sine:30.0')
    h = QuantileZeroing(1.0).apply(g, torch.tensor(q))
    for w, v in zip(layer_views(g)[0], layer_views(h)[0]):
        n = w.numel()
        zeroed = v == 0
        assert int(zeroed.sum()) == int(q * n)
        if zeroed.any():                     # the zeroed are exactly the smallest
            assert float(w[zeroed].abs().max()) < float(w[~zeroed].abs().min())
        assert torch.equal(v[~zeroed], w[~zeroed])
    assert torch.equal(h.x, g.x)


def test_quantile_is_per_layer_not_global():
    # layer 1 is 1000x smaller: a global threshold would wipe it out
    g = from_weights([torch.randn(50, 2), torch.randn(1, 50) * 1e-3], activation='relu')
    h = QuantileZeroing(1.0).apply(g, torch.tensor(0.2))
    w1 = layer_views(h)[0][1]
    assert int((w1 == 0).sum()) == 10


def test_random_quantile_up_to_max(kit):
    g = kit.make_graph((2, 32, 32, 1), 'relu')
    t = QuantileZeroing(0.4)
    fractions = [float((t(g).edge_attr == 0).float().mean()) for _ in range(30)]
    assert max(fractions) <= 0.4 + 1e-6 and min(fractions) < 0.1 and max(fractions) > 0.3


def test_batch_draws_one_quantile_per_graph(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 8, 1))] * 500)
    q = QuantileZeroing(0.3).sample(batch)
    assert q.shape == (500,) and float(q.min()) >= 0 and float(q.max()) <= 0.3
    assert abs(float(q.mean()) - 0.15) < 0.02


def test_bad_max_quantile():
    with pytest.raises(ValueError, match='QuantileZeroing: max_quantile must be in'):
        QuantileZeroing(1.5)
