"""GraphClassifier is invariant to hidden permutations; the flat baseline is not."""
import pytest
import torch
from torch_geometric.data import Batch

import nngraph
from nngraph.graph import layer_views, permute_hidden, with_layers
from nngraph.models import FlatMLPClassifier, FlatMLPEncoder, GraphClassifier, ProjectionHead


def graphs(n, sizes=(2, 8, 8, 1), seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        W = [torch.randn(b, a, generator=gen) for a, b in zip(sizes[:-1], sizes[1:])]
        b = [torch.randn(d, generator=gen) for d in sizes[1:]]
        out.append(nngraph.from_weights(W, b, 'sine:30.0'))
    return out


def permute(g, seed):
    gen = torch.Generator().manual_seed(seed)
    weights, biases = layer_views(g)
    return with_layers(g, *permute_hidden(weights, biases, [torch.randperm(d, generator=gen)
                                                             for d in g.layer_sizes[1:-1]]))


def test_classifier_invariant_flat_not():
    torch.manual_seed(0)
    gs = graphs(4)
    ps = [permute(g, i) for i, g in enumerate(gs)]
    # The permuted networks compute the same function (so they are the same object).
    x = torch.rand(16, 2)
    torch.testing.assert_close(nngraph.forward(gs[0], x), nngraph.forward(ps[0], x), rtol=1e-5, atol=1e-5)
    a, b = Batch.from_data_list(gs), Batch.from_data_list(ps)
    clf = GraphClassifier(10, in_features=2, out_features=1, hidden=16, edge_hidden=8, layers=2).eval()
    out = clf(a)
    assert out.shape == (4, 10)
    torch.testing.assert_close(out, clf(b), rtol=1e-4, atol=1e-5)
    flat = FlatMLPClassifier(10, (2, 8, 8, 1), hidden=32).eval()
    assert flat(a).shape == (4, 10)
    assert (flat(a) - flat(b)).abs().max() > 1e-3


def test_flat_rejects_other_architecture():
    flat = FlatMLPClassifier(3, (2, 8, 8, 1))
    with pytest.raises(ValueError, match=r'built for layer sizes \(2, 8, 8, 1\)'):
        flat(Batch.from_data_list(graphs(2, (2, 4, 1))))


def test_classifier_rejects_wrong_widths():
    clf = GraphClassifier(3, in_features=2, out_features=1, hidden=8, layers=1)
    with pytest.raises(ValueError, match='2 inputs, 1 outputs'):
        clf(Batch.from_data_list(graphs(2, (2, 4, 3))))
    with pytest.raises(ValueError, match='num_classes'):
        GraphClassifier(1, in_features=2, out_features=1)


def test_projection_head_shape():
    assert ProjectionHead(16, 8)(torch.randn(5, 16)).shape == (5, 8)


def test_flat_encoder_standardises_each_parameter_block():
    sizes = (2, 8, 8, 1)
    gs = graphs(64, sizes)
    batch = Batch.from_data_list(gs)
    enc = FlatMLPEncoder(sizes, hidden=16)
    enc.fit_normalization(batch)
    z = enc.standardize(batch)
    # Blocks in canonical order: the three weight matrices, then the three bias vectors.
    start = 0
    for n in (16, 64, 8, 8, 8, 1):
        block = z[:, start:start + n]
        torch.testing.assert_close(block.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
        torch.testing.assert_close(block.std(), torch.tensor(1.0), atol=1e-5, rtol=0)
        start += n
    assert start == z.size(1) and enc(batch).shape == (64, 16)


def test_flat_encoder_standardisation_commutes_with_permutation():
    # One shift and scale per block: a permuted network is a permutation of
    # the standardised vector, so the flat model sees the same values moved.
    sizes = (2, 8, 8, 1)
    gs = graphs(8, sizes)
    enc = FlatMLPEncoder(sizes, hidden=16)
    enc.fit_normalization(Batch.from_data_list(gs))
    za = enc.standardize(Batch.from_data_list(gs[:1]))
    zb = enc.standardize(Batch.from_data_list([permute(gs[0], 3)]))
    assert not torch.equal(za, zb)
    torch.testing.assert_close(za.sort().values, zb.sort().values)
    with pytest.raises(ValueError, match='at least 1 hidden layer'):
        FlatMLPEncoder(sizes, layers=0)


def test_flat_classifier_is_encoder_plus_linear_head():
    clf = FlatMLPClassifier(10, (2, 8, 8, 1), hidden=32).eval()
    batch = Batch.from_data_list(graphs(3))
    torch.testing.assert_close(clf(batch), clf.head(clf.encoder(batch)))
    assert clf.encoder.out_dim == 32


def with_nan(g, field='edge_attr', row=0):
    t = getattr(g, field).clone()
    t[row, 0] = float('nan')
    out = g.clone()
    setattr(out, field, t)
    return out


# Issue 19, row 6: every model's forward on a batch refuses non-finite inputs.
@pytest.mark.parametrize('field, where', [('edge_attr', r'edge_attr \(weights\) .* weight matrix 1 \(row 26\)'),
                                          ('x', r'x \(biases\) .* neuron layer 3 \(row 18\)')])
def test_models_refuse_a_non_finite_graph_naming_it(field, where):
    torch.manual_seed(0)
    gs = graphs(3)
    gs[1] = with_nan(gs[1], field, 16 + 8 + 2 if field == 'edge_attr' else 18)   # W_1[1, 2]; b_2[0], the output
    batch = Batch.from_data_list(gs)
    models = {'FlatMLPEncoder': FlatMLPClassifier(10, (2, 8, 8, 1), hidden=16),
              'GNNEncoder': GraphClassifier(10, in_features=2, out_features=1, hidden=8, layers=1)}
    for name, model in models.items():
        with pytest.raises(ValueError, match=rf'^{name}: graph 1: {where}'):
            model(batch)
    flat = FlatMLPEncoder((2, 8, 8, 1), hidden=16)
    with pytest.raises(ValueError, match='^FlatMLPEncoder: graph 1: '):
        flat.fit_normalization(batch)
    assert torch.equal(flat.shift, torch.zeros_like(flat.shift))       # nothing fitted
