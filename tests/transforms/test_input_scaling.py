import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import forward, layer_views
from nngraph.transforms import InputScaling


@pytest.mark.parametrize('d', [2, 3])
def test_fixed_scale_against_original(d, kit):
    g = kit.make_graph((d, 32, 32, 1), 'sine:30.0')
    h = InputScaling(2.0, 2.0)(g)
    x = kit.inputs(d)
    kit.assert_close_f32(forward(h, x), forward(g, 2.0 * x))      # f'(x) = f(s x)
    (w, b), (v, c) = layer_views(g), layer_views(h)
    assert torch.equal(v[0], 2 * w[0]) and all(torch.equal(p, q) for p, q in zip(b, c))


@pytest.mark.parametrize('d', [2, 3])
def test_random_scale_equals_original_at_scaled_points(d, kit):
    t = InputScaling(0.5, 1.5)
    g = kit.make_graph((d, 16, 16, 1), 'relu')
    for _ in range(4):
        s = t.sample(g)
        assert 0.5 <= float(s) <= 1.5
        x = kit.inputs(d)
        kit.assert_close_f32(forward(t.apply(g, s), x), forward(g, s * x))


def test_one_factor_per_graph(kit):
    batch = Batch.from_data_list([kit.make_graph((2, 4, 1))] * 1000)
    s = InputScaling(0.5, 1.5).sample(batch)
    assert s.shape == (1000,) and float(s.min()) >= 0.5 and float(s.max()) <= 1.5
    assert abs(float(s.mean()) - 1.0) < 0.03


@pytest.mark.parametrize('low, high', [(0.0, 1.0), (2.0, 1.0)])
def test_bad_range(low, high):
    with pytest.raises(ValueError, match='InputScaling: need 0 < low <= high'):
        InputScaling(low, high)
