import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import from_weights, layer_views
from nngraph.transforms import WeightNoise


def test_noise_is_zero_mean_gaussian_relative_to_layer_std():
    w0, w1 = torch.randn(200, 100) * 5.0, torch.randn(1, 200) * 0.01
    g = from_weights([w0, w1], [torch.zeros(200), torch.zeros(1)], 'relu')
    h = WeightNoise(0.1)(g)
    (w, b), (v, c) = layer_views(g), layer_views(h)
    for l, scale in ((0, float(w0.std(correction=0))), (1, float(w1.std(correction=0)))):
        delta = (v[l] - w[l]) / (0.1 * scale)
        n = delta.numel()
        assert abs(float(delta.mean())) < 4 / n ** 0.5
        assert abs(float(delta.std()) - 1.0) < 5 / n ** 0.5 + 0.02
    # not a constant: the deltas vary from weight to weight, and biases move too
    assert float((v[0] - w[0]).std()) > 0.4
    bias_delta = (c[0] - b[0]) / (0.1 * float(w0.std(correction=0)))
    assert abs(float(bias_delta.std()) - 1.0) < 0.15


def test_roughly_normal_tails():
    g = from_weights([torch.randn(300, 300)], activation='relu')
    w, = layer_views(g)[0]
    delta = (layer_views(WeightNoise(1.0)(g))[0][0] - w) / w.std(correction=0)
    # a normal puts 68.3% within one sigma and 95.4% within two
    assert abs(float((delta.abs() < 1).float().mean()) - 0.683) < 0.01
    assert abs(float((delta.abs() < 2).float().mean()) - 0.954) < 0.01


def test_fresh_noise_every_call(kit):
    g = kit.make_graph((2, 16, 1))
    t = WeightNoise(0.1)
    assert not torch.equal(t(g).edge_attr, t(g).edge_attr)


def test_std_zero_is_identity(kit):
    g = kit.make_graph((2, 16, 1))
    h = WeightNoise(0.0)(g)
    assert torch.equal(h.edge_attr, g.edge_attr) and torch.equal(h.x, g.x)


def test_scale_is_per_graph_in_a_batch(kit):
    g = kit.make_graph((2, 64, 64, 1), 'relu')
    big = g.clone()
    big.edge_attr = g.edge_attr * 100
    out = WeightNoise(0.1)(Batch.from_data_list([g, big])).to_data_list()
    small_delta = (out[0].edge_attr - g.edge_attr).std()
    big_delta = (out[1].edge_attr - big.edge_attr).std()
    assert 70 < float(big_delta / small_delta) < 140


def test_bad_std():
    with pytest.raises(ValueError, match='WeightNoise: std must be >= 0'):
        WeightNoise(-0.1)
