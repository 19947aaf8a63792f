"""StatNN: its features are the per-tensor statistics computed one graph at a
time, they do not see neuron order, and bad batches fail clearly."""
import pytest
import torch
from torch_geometric.data import Batch

import nngraph
from nngraph.models import StatNNEncoder, statnn_features
from nngraph.transforms import RandomNeuronPermutation


def graphs(n, sizes=(2, 8, 8, 1), seed=0, activation='sine:30.0'):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        W = [torch.randn(b, a, generator=gen) * (1 + torch.rand(1, generator=gen))
             for a, b in zip(sizes[:-1], sizes[1:])]
        b = [torch.randn(d, generator=gen) + torch.rand(1, generator=gen) for d in sizes[1:]]
        out.append(nngraph.from_weights(W, b, activation))
    return out


def by_hand(g):
    """The StatNN features of one graph, one tensor at a time."""
    weights, biases = nngraph.to_weights(g)
    q = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    feats = []
    for W, b in zip(weights, biases):
        for t in (W.flatten(), b.flatten()):
            feats += [t.mean().view(1), ((t - t.mean()) ** 2).mean().view(1), torch.quantile(t, q)]
    return torch.cat(feats)


@pytest.mark.parametrize('sizes', [(2, 8, 8, 1), (3, 5, 4, 2)])
def test_features_equal_per_graph_statistics(sizes):
    gs = graphs(5, sizes)
    f = statnn_features(Batch.from_data_list(gs))
    assert f.shape == (5, 14 * (len(sizes) - 1))
    expected = torch.stack([by_hand(g) for g in gs])
    torch.testing.assert_close(f, expected, rtol=1e-5, atol=1e-6)
    # A single graph is a batch of one.
    torch.testing.assert_close(statnn_features(gs[2]), expected[2:3], rtol=1e-5, atol=1e-6)


def test_features_do_not_see_neuron_order():
    torch.manual_seed(0)
    gs = graphs(6)
    permuted = [RandomNeuronPermutation()(g) for g in gs]
    assert not torch.equal(permuted[0].edge_attr, gs[0].edge_attr)
    torch.testing.assert_close(statnn_features(Batch.from_data_list(permuted)),
                               statnn_features(Batch.from_data_list(gs)), rtol=1e-6, atol=1e-6)


def test_standardisation_is_fitted_on_training_graphs():
    gs = graphs(40)
    enc = StatNNEncoder(3, hidden=16, layers=1)
    batch = Batch.from_data_list(gs)
    enc.fit_normalization(batch)
    z = enc.standardize(batch)
    varying = statnn_features(batch).std(0) > 1e-8
    # The output bias has one element: its variance is 0 in every graph and keeps scale 1.
    assert (~varying).sum() == 1 and enc.scale[~varying].item() == 1.0
    torch.testing.assert_close(z.mean(0), torch.zeros(42), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, varying].std(0), torch.ones(int(varying.sum())), atol=1e-5, rtol=0)
    assert enc(batch).shape == (40, 16)


def test_mixed_or_wrong_architectures_are_refused():
    enc = StatNNEncoder(3, hidden=8)
    mixed = Batch.from_data_list(graphs(2) + graphs(2, (2, 4, 4, 1)))
    with pytest.raises(ValueError, match=r'per architecture; this batch mixes \[\(2, 4, 4, 1\), \(2, 8, 8, 1\)\]'):
        enc(mixed)
    with pytest.raises(ValueError, match='built for networks of 3 weight layers, got one with 2'):
        enc(Batch.from_data_list(graphs(2, (2, 4, 1))))
    # Other widths of the same depth are the same features.
    assert enc(Batch.from_data_list(graphs(3, (2, 4, 4, 1)))).shape == (3, 8)


# Issue 19, row 6: a NaN sorts to the end of a row and became a graph's max
# quantile, silently; it is refused naming the graph.
def test_non_finite_graph_is_refused_naming_it():
    gs = graphs(3)
    ea = gs[2].edge_attr.clone()
    ea[20, 0] = float('inf')                     # W_1[0, 4]
    gs[2].edge_attr = ea
    enc = StatNNEncoder(3, hidden=8)
    with pytest.raises(ValueError, match=r'^StatNN: graph 2: edge_attr \(weights\) .* weight matrix 1 \(row 20\)'):
        enc.fit_normalization(Batch.from_data_list(gs))
    with pytest.raises(ValueError, match=r'^StatNN: graph 2: edge_attr'):
        enc(Batch.from_data_list(gs))
    assert torch.equal(enc.shift, torch.zeros_like(enc.shift))


# --------------------------------------------------------------------------- mixed depths (model zoos)

def test_padded_features_put_each_layer_in_its_slot():
    from nngraph.models.statnn import padded_statnn_features
    deep, shallow = graphs(2, (3, 5, 4, 2), seed=1), graphs(2, (3, 6, 2), seed=2)
    mixed = [deep[0], shallow[0], deep[1], shallow[1]]
    f, present = padded_statnn_features(Batch.from_data_list(mixed), max_layers=3)
    assert f.shape == (4, 3 * 14) and present.tolist() == [[1, 1, 1], [1, 0, 1]] * 2
    for row, g in zip(f, mixed):
        expected = by_hand(g).view(-1, 14)                     # one row of 14 per weight layer
        slots = [0, 1, 2] if len(expected) == 3 else [0, 2]   # the output layer takes the last slot
        torch.testing.assert_close(row.view(3, 14)[slots], expected, rtol=1e-5, atol=1e-6)
    assert f[1].view(3, 14)[1].abs().sum() == 0                # an absent slot is 0
    # one depth: the fixed layout, and the padded one agrees with it
    same = Batch.from_data_list(deep)
    torch.testing.assert_close(padded_statnn_features(same, 3)[0], statnn_features(same), rtol=1e-5, atol=1e-6)


def test_variable_depth_encoder_reads_mixed_batches_and_zeroes_absent_slots():
    torch.manual_seed(0)
    mixed = graphs(3, (3, 5, 4, 2), seed=3) + graphs(3, (3, 6, 2), seed=4)
    enc = StatNNEncoder(3, hidden=8, layers=1, variable_depth=True)
    batch = Batch.from_data_list(mixed)
    enc.fit_normalization(batch)
    z = enc.standardize(batch)
    assert z.shape == (6, 3 * 15) and torch.isfinite(z).all()
    assert z[3:, 14:28].abs().sum() == 0                       # shallow networks have no slot 1
    # each present feature is standardised over the graphs that have it
    torch.testing.assert_close(z[:3, 14:28].mean(0), torch.zeros(14), atol=1e-5, rtol=0)
    assert enc(batch).shape == (6, 8)
    with pytest.raises(ValueError, match='at most 3 weight layers, got one with 4'):
        enc(Batch.from_data_list(graphs(1, (3, 4, 4, 4, 2))))
    with pytest.raises(ValueError, match='built for networks of 3 weight layers, got one with 2'):
        StatNNEncoder(3)(Batch.from_data_list(mixed[3:]))
