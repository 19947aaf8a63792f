"""GNNEncoder: invariance to hidden-neuron permutations, equality of its three
paths, mixed architectures, and clear errors."""
import pytest
import torch
from torch_geometric.data import Batch

import nngraph
from nngraph.graph import layer_views, permute_hidden, with_layers
from nngraph.models import GNNEncoder


def random_graph(sizes, gen, dtype=torch.float64):
    W = [torch.randn(b, a, generator=gen, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    b = [torch.randn(d, generator=gen, dtype=dtype) for d in sizes[1:]]
    return nngraph.from_weights(W, b, 'sine:30.0')


def permuted(g, gen):
    weights, biases = layer_views(g)
    perms = [torch.randperm(d, generator=gen) for d in g.layer_sizes[1:-1]]
    return with_layers(g, *permute_hidden(weights, biases, perms))


def encoder(**kw):
    torch.manual_seed(0)
    args = dict(in_features=2, out_features=1, hidden=16, edge_hidden=8, layers=3, fourier_features=4,
                probe_points=5)
    args.update(kw)
    return GNNEncoder(**args).double().eval()


@pytest.mark.parametrize('path', ['blocks', 'sparse', 'dense'])
def test_invariant_to_hidden_permutations(path):
    gen = torch.Generator().manual_seed(1)
    graphs = [random_graph((2, 8, 6, 1), gen) for _ in range(3)]
    perm = [permuted(g, gen) for g in graphs]
    # The permutation really changed the weights (otherwise the test proves nothing).
    assert not torch.equal(graphs[0].edge_attr, perm[0].edge_attr)
    enc = encoder()
    a = enc(Batch.from_data_list(graphs), path=path)
    b = enc(Batch.from_data_list(perm), path=path)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_permutation_of_inputs_changes_embedding():
    # Input neurons are not interchangeable: swapping the two input columns of
    # W_0 is a different network and must (generically) embed differently.
    gen = torch.Generator().manual_seed(2)
    g = random_graph((2, 8, 1), gen)
    weights, biases = layer_views(g)
    swapped = with_layers(g, [weights[0][:, [1, 0]], weights[1]], biases)
    enc = encoder()
    assert not torch.allclose(enc(g), enc(swapped), atol=1e-6)


@pytest.mark.parametrize('aggr', ['mean', 'sum', 'max'])
def test_paths_compute_the_same_function(aggr):
    gen = torch.Generator().manual_seed(3)
    batch = Batch.from_data_list([random_graph((2, 5, 7, 3), gen) for _ in range(4)])
    enc = encoder(out_features=3, aggr=aggr)
    ref = enc(batch, path='blocks')
    torch.testing.assert_close(enc(batch, path='sparse'), ref, rtol=1e-10, atol=1e-10)
    if aggr != 'max':
        torch.testing.assert_close(enc(batch, path='dense'), ref, rtol=1e-10, atol=1e-10)


def test_gradients_of_paths_agree():
    gen = torch.Generator().manual_seed(4)
    batch = Batch.from_data_list([random_graph((2, 6, 1), gen) for _ in range(3)])
    enc = encoder()
    grads = []
    for path in ('blocks', 'sparse'):
        enc.zero_grad()
        enc(batch, path=path).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-9, atol=1e-10)


def test_mixed_architectures_equal_each_graph_alone():
    gen = torch.Generator().manual_seed(5)
    graphs = [random_graph(s, gen) for s in [(2, 8, 8, 1), (2, 5, 1), (2, 3, 4, 6, 1)]]
    enc = encoder()
    together = enc(Batch.from_data_list(graphs))
    alone = torch.cat([enc(g) for g in graphs])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-10)


def test_wrong_widths_raise_clear_error():
    gen = torch.Generator().manual_seed(6)
    enc = encoder()
    bad = Batch.from_data_list([random_graph((2, 4, 1), gen), random_graph((3, 4, 1), gen)])
    with pytest.raises(ValueError, match=r'graph 1 has layer sizes \(3, 4, 1\).*2 inputs, 1 outputs'):
        enc(bad)
    with pytest.raises(ValueError, match='one architecture'):
        enc(Batch.from_data_list([random_graph((2, 4, 1), gen), random_graph((2, 5, 1), gen)]), path='blocks')


def test_bad_arguments():
    with pytest.raises(ValueError, match='aggr'):
        GNNEncoder(2, 1, aggr='median')
    with pytest.raises(ValueError, match='hidden'):
        GNNEncoder(2, 1, hidden=0)


def test_linear_flops_match_flop_counter():
    # The benchmark's FLOP figure must be what torch actually multiplies.
    from torch.utils.flop_counter import FlopCounterMode
    gen = torch.Generator().manual_seed(7)
    sizes = (2, 8, 6, 1)
    batch = Batch.from_data_list([random_graph(sizes, gen, torch.float32) for _ in range(3)])
    enc = GNNEncoder(2, 1, hidden=16, edge_hidden=8, layers=2, out_dim=12)
    with FlopCounterMode(display=False) as counter:
        enc(batch)
    assert counter.get_total_flops() == 3 * enc.linear_flops(sizes)


def test_multiple_aggregators_paths_agree_and_are_invariant():
    gen = torch.Generator().manual_seed(8)
    graphs = [random_graph((2, 5, 7, 3), gen) for _ in range(4)]
    enc = encoder(out_features=3, aggr='mean,max,sum')
    batch = Batch.from_data_list(graphs)
    ref = enc(batch, path='blocks')
    torch.testing.assert_close(enc(batch, path='sparse'), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(enc(Batch.from_data_list([permuted(g, gen) for g in graphs])), ref,
                               rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="path='dense' supports aggr 'mean' and 'sum' only"):
        enc(batch, path='dense')
    with pytest.raises(ValueError, match='distinct'):
        GNNEncoder(2, 1, aggr='mean,mean')


@pytest.mark.parametrize('by', ['bias', 'out'])
def test_canonical_signs_make_the_encoder_sign_invariant(by):
    from nngraph.transforms import RandomSignFlip
    gen = torch.Generator().manual_seed(9)
    graphs = [random_graph((2, 8, 6, 1), gen) for _ in range(3)]
    torch.manual_seed(0)
    flipped = [RandomSignFlip()(g) for g in graphs]
    assert not torch.equal(flipped[0].edge_attr, graphs[0].edge_attr)
    plain, invariant = encoder(), encoder(canonical_signs=by)
    a, b = Batch.from_data_list(graphs), Batch.from_data_list(flipped)
    torch.testing.assert_close(invariant(a), invariant(b), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(plain(a), plain(b), atol=1e-6)     # without it, flips are seen


def test_bias_fold_and_canonical_signs_make_the_encoder_invariant_to_shifts_and_flips():
    from nngraph.transforms import RandomSignFlip, SirenBiasShift
    gen = torch.Generator().manual_seed(13)
    graphs = [random_graph((2, 8, 6, 1), gen) for _ in range(3)]       # biases ~ N(0, 1): many half periods
    torch.manual_seed(0)
    moved = [RandomSignFlip()(SirenBiasShift(k_max=2)(g)) for g in graphs]
    assert not torch.equal(moved[0].x, graphs[0].x)
    plain, invariant = encoder(canonical_signs='out'), encoder(canonical_signs='out', fold_siren_bias=True)
    a, b = Batch.from_data_list(graphs), Batch.from_data_list(moved)
    invariant.fit_normalization(a)
    torch.testing.assert_close(invariant(a), invariant(b), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(invariant(a, path='sparse'), invariant(b), rtol=1e-8, atol=1e-8)
    assert not torch.allclose(plain(a), plain(b), atol=1e-6)     # sign flips alone do not explain it
    # the fold alone: invariant to bias shifts
    fold_only = encoder(fold_siren_bias=True)
    shifted = Batch.from_data_list([SirenBiasShift(k_max=2)(g) for g in graphs])
    torch.testing.assert_close(fold_only(a), fold_only(shifted), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match='SirenBiasFold needs a sine activation'):
        fold_only(nngraph.from_weights([torch.randn(8, 2), torch.randn(1, 8)], [torch.randn(8), torch.randn(1)],
                                       'tanh'))


def test_weight_only_encoder_memorises_a_few_dozen_graphs():
    # The failure this guards against: a weight-only GNN (no probe features)
    # that stayed at chance even on its training graphs. 48 sine networks with
    # DWSNets-like weight scales (first layer ~0.05, hidden ~0.02) and random
    # labels: only by reading the weights can the training set be fitted.
    from nngraph.models import GraphClassifier
    gen = torch.Generator().manual_seed(10)
    sizes, scales = (2, 16, 16, 1), (0.05, 0.02, 0.1)
    graphs = []
    for i in range(48):
        W = [scale * torch.randn(b, a, generator=gen) for a, b, scale in zip(sizes[:-1], sizes[1:], scales)]
        bias = [0.02 * torch.randn(d, generator=gen) for d in sizes[1:]]
        g = nngraph.from_weights(W, bias, 'sine:30.0')
        g.y = torch.tensor([i % 4])
        graphs.append(g)
    batch = Batch.from_data_list(graphs)
    torch.manual_seed(0)
    model = GraphClassifier(4, in_features=2, out_features=1, hidden=32, edge_hidden=16, layers=3,
                            probe_points=0, canonical_signs='out')
    model.encoder.fit_normalization(batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(batch), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(batch).argmax(-1) == batch.y).float().mean())
    assert accuracy >= 0.95, f'weight-only encoder fits only {accuracy:.0%} of 48 training graphs'


def with_value(g, field, row, value):
    """``g`` with ``field[row, 0]`` set to ``value`` (a new tensor)."""
    t = getattr(g, field).clone()
    t[row, 0] = value
    out = g.clone()
    setattr(out, field, t)
    return out


# Issue 19, row 6: a NaN weight gave NaN logits with no error.
@pytest.mark.parametrize('field, row, value, where', [
    ('edge_attr', 17, float('nan'), r'edge_attr \(weights\) holds 1 NaN or Inf value\(s\), the first in weight matrix 1 \(row 17\)'),
    ('x', 3, float('inf'), r'x \(biases\) holds 1 NaN or Inf value\(s\), the first in neuron layer 1 \(row 3\)'),
    ('x', 10, float('-inf'), r'x \(biases\) holds 1 NaN or Inf value\(s\), the first in neuron layer 2 \(row 10\)'),
])
@pytest.mark.parametrize('path', ['blocks', 'sparse'])
def test_non_finite_graph_is_refused_naming_it(field, row, value, where, path):
    gen = torch.Generator().manual_seed(11)
    graphs = [random_graph((2, 8, 1), gen) for _ in range(4)]      # 16 + 8 edges, 11 nodes
    graphs[2] = with_value(graphs[2], field, row, value)
    enc = encoder(canonical_signs='bias')
    with pytest.raises(ValueError, match=r'^GNNEncoder: graph 2: ' + where):
        enc(Batch.from_data_list(graphs), path=path)
    with pytest.raises(ValueError, match=r'^GNNEncoder: ' + where):
        enc(graphs[2])
    # the batch without it is fine, and finite
    assert torch.isfinite(enc(Batch.from_data_list(graphs[:2] + graphs[3:]), path=path)).all()


def test_finite_graph_whose_sum_overflows_is_accepted():
    # The screen is a sum (NaN and inf propagate through it); a finite graph
    # whose sum overflows must still pass the exact test behind it.
    gen = torch.Generator().manual_seed(12)
    g = random_graph((2, 8, 1), gen, dtype=torch.float32)
    g = with_value(with_value(g, 'edge_attr', 0, 3e38), 'edge_attr', 1, 3e38)
    assert not torch.isfinite(g.edge_attr.sum())
    torch.manual_seed(0)
    GNNEncoder(2, 1, hidden=8, layers=1).eval()(g)        # no error


def test_fit_normalization_refuses_a_non_finite_graph_naming_it():
    from nngraph.training.models import fit_normalization
    gen = torch.Generator().manual_seed(13)
    graphs = [random_graph((2, 8, 1), gen) for _ in range(6)]
    graphs[4] = with_value(graphs[4], 'edge_attr', 5, float('nan'))
    enc = encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(ValueError, match=r'^fit_normalization on dataset items 0-5 \(graph i is item i\): '
                                         r'graph 4: edge_attr \(weights\) holds 1 NaN'):
        fit_normalization(enc, graphs)
    with pytest.raises(ValueError, match=r'^GNNEncoder: graph 4: edge_attr \(weights\) holds 1 NaN'):
        enc.fit_normalization(Batch.from_data_list(graphs))
    # nothing was fitted: the normalisation is what it was, not NaN
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in before.items())


@pytest.mark.filterwarnings('ignore:Dynamo')     # its notes on the graph breaks, which are expected
def test_compiled_encoder_runs_and_refuses_non_finite_graphs():
    # The check reads a number back: under torch.compile it must run eagerly
    # (a graph break by design) and still raise. Dynamo only (backend='eager'):
    # the graph breaks are what matter here, not inductor's code.
    gen = torch.Generator().manual_seed(14)
    graphs = [random_graph((2, 4, 1), gen) for _ in range(3)]
    enc = encoder(hidden=8, edge_hidden=8, layers=1, fourier_features=0, probe_points=0, canonical_signs='bias')
    compiled = torch.compile(enc, backend='eager')
    torch.testing.assert_close(compiled(Batch.from_data_list(graphs)), enc(Batch.from_data_list(graphs)))
    graphs[1] = with_value(graphs[1], 'edge_attr', 2, float('nan'))
    with pytest.raises(ValueError, match=r'^GNNEncoder: graph 1: edge_attr \(weights\) holds 1 NaN'):
        compiled(Batch.from_data_list(graphs))
