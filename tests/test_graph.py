import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch
from torch_geometric.nn import GINEConv, TransformerConv

import nngraph as ng
from nngraph.graph import architecture, layer_offsets, stacked_layer_views, structure
from tests.helpers import ACTIVATIONS, inputs, mlp, random_weights

architectures = st.lists(st.integers(1, 9), min_size=2, max_size=5)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(sizes=architectures, act=st.sampled_from(ACTIVATIONS),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**16))
def test_round_trip_is_bit_exact_and_forward_equal(sizes, act, dtype, seed):
    # Bit-exact forward holds because forward computes nn.Linear's own product
    # on memory aligned as nn.Linear's is: on a view into edge_attr, BLAS
    # rounded differently for some layer offsets ([1, 7, 1, 9, 1] one seed in two)
    model = mlp(sizes, act, seed=seed, dtype=dtype)
    g = ng.from_module(model)
    state = ng.to_state_dict(g)
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    x = inputs(17, sizes[0], seed=seed, dtype=dtype)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(ng.forward(g, x), expected)
        assert torch.equal(ng.to_module(g)(x), expected)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_forward_is_bit_exact_whatever_the_layer_offsets(dtype):
    """Layers at odd offsets into edge_attr (7, 14, 23 values): a product on
    those views rounded differently from nn.Linear's for one seed in two."""
    for seed in range(12):
        model = mlp([1, 7, 1, 9, 1], 'relu', seed=seed, dtype=dtype)
        x = inputs(17, 1, seed=seed, dtype=dtype)
        with torch.no_grad():
            assert torch.equal(ng.forward(ng.from_module(model), x), model(x)), seed


@settings(max_examples=30, deadline=None, derandomize=True)
@given(sizes=architectures, seed=st.integers(0, 2**16))
def test_canonical_order(sizes, seed):
    weights, biases = random_weights(sizes, seed=seed)
    g = ng.from_weights(weights, biases, activation='tanh')
    node_off, edge_off = layer_offsets(tuple(sizes))
    assert g.num_nodes == sum(sizes) and g.num_edges == edge_off[-1]
    assert torch.equal(g.x[:sizes[0], 0], torch.zeros(sizes[0]))
    for l, (w, b) in enumerate(zip(weights, biases)):
        d_out, d_in = w.shape
        assert torch.equal(g.edge_attr[edge_off[l]:edge_off[l] + d_out * d_in].view(d_out, d_in), w)
        assert torch.equal(g.x[node_off[l + 1]:node_off[l + 2], 0], b)
        # edge i*d_in + j of layer l runs from input j to output i
        src, dst = g.edge_index[:, edge_off[l]:edge_off[l + 1]]
        i, j = torch.meshgrid(torch.arange(d_out), torch.arange(d_in), indexing='ij')
        assert torch.equal(src, node_off[l] + j.reshape(-1))
        assert torch.equal(dst, node_off[l + 1] + i.reshape(-1))
        assert torch.equal(g.layer[node_off[l]:node_off[l + 1]], torch.full((sizes[l],), l))


def test_to_weights_returns_copies():
    weights, biases = random_weights([2, 4, 1])
    g = ng.from_weights(weights, biases)
    w, b = ng.to_weights(g)
    w[0].zero_()
    b[0].zero_()
    assert torch.equal(ng.to_weights(g)[0][0], weights[0])
    weights[0].zero_()  # the graph holds its own copy
    assert not torch.equal(ng.to_weights(g)[0][0], weights[0])


def test_structure_is_shared_per_architecture_but_returned_fresh():
    a, _ = structure((2, 3, 1))
    a.zero_()
    b, _ = structure((2, 3, 1))
    assert b.abs().sum() > 0
    g1 = ng.from_weights(*random_weights([2, 3, 1]))
    g2 = ng.from_weights(*random_weights([2, 3, 1], seed=1))
    assert g1.edge_index.data_ptr() != g2.edge_index.data_ptr()


def test_missing_biases_are_zeros_and_layer_names_kept():
    weights, _ = random_weights([3, 5, 2])
    g = ng.from_weights(weights, [None, None], activation='relu', names=['a', 'b'],
                        layer_bias=(False, False))
    assert torch.equal(g.x[3:, 0], torch.zeros(7))
    assert list(ng.to_state_dict(g)) == ['a.weight', 'b.weight']


def test_per_layer_activations_are_recorded_and_evaluated():
    acts = ('sine:60.0', 'tanh', 'sigmoid')
    weights, biases = random_weights([2, 6, 4, 3])
    g = ng.from_weights(weights, biases, activation=acts)
    assert g.activation == acts
    x = inputs(9, 2)
    h = torch.sin(60 * (x @ weights[0].t() + biases[0]))
    h = torch.tanh(h @ weights[1].t() + biases[1])
    expected = torch.sigmoid(h @ weights[2].t() + biases[2])
    assert torch.allclose(ng.forward(g, x), expected, atol=1e-6)
    assert torch.equal(ng.to_module(g)(x), ng.forward(g, x))


def test_forward_keeps_leading_dims():
    g = ng.from_weights(*random_weights([3, 4, 2]))
    x = torch.randn(5, 7, 3)
    assert torch.allclose(ng.forward(g, x).reshape(35, 2), ng.forward(g, x.reshape(35, 3)))


def test_batch_forward_equals_each_graph():
    graphs = [ng.from_weights(*random_weights([2, 8, 8, 1], seed=s), activation='sine:30.0')
              for s in range(5)]
    batch = Batch.from_data_list(graphs)
    x = inputs(33, 2)
    out = ng.forward(batch, x)
    assert out.shape == (5, 33, 1)
    for i, g in enumerate(graphs):
        assert torch.allclose(out[i], ng.forward(g, x), atol=1e-5, rtol=1e-5)
    per_graph_inputs = torch.randn(5, 4, 2)
    out = ng.forward(batch, per_graph_inputs)
    for i, g in enumerate(graphs):
        assert torch.allclose(out[i], ng.forward(g, per_graph_inputs[i]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r'\[n, 2\] or \[5, n, 2\]'):
        ng.forward(batch, torch.randn(4, 4, 2))


def test_stacked_views_are_views_of_the_batch():
    graphs = [ng.from_weights(*random_weights([3, 4, 2], seed=s)) for s in range(3)]
    batch = Batch.from_data_list(graphs)
    weights, biases = stacked_layer_views(batch)
    assert weights[1].shape == (3, 2, 4, 1) and biases[0].shape == (3, 4, 1)
    assert weights[0].data_ptr() == batch.edge_attr.data_ptr()
    for i, g in enumerate(graphs):
        w, b = ng.to_weights(g)
        assert all(torch.equal(weights[l][i, ..., 0], w[l]) for l in range(2))
        assert all(torch.equal(biases[l][i, :, 0], b[l]) for l in range(2))


def test_mixed_architectures_batch_and_run_through_stock_convs():
    sizes = [[2, 8, 1], [2, 16, 16, 1], [3, 4, 4, 4, 2]]
    graphs = [ng.from_weights(*random_weights(s, seed=i), activation='relu') for i, s in enumerate(sizes)]
    batch = Batch.from_data_list(graphs)
    assert architecture(batch) == [tuple(s) for s in sizes]
    assert batch.num_nodes == sum(map(sum, sizes))
    torch.manual_seed(0)
    for conv in (GINEConv(torch.nn.Linear(1, 8), edge_dim=1), TransformerConv(1, 8, edge_dim=1)):
        out = conv(batch.x, batch.edge_index, batch.edge_attr)
        assert out.shape == (batch.num_nodes, 8)
        # a batch is the sum of its parts: each graph alone gives its rows of the batch output
        for i, g in enumerate(graphs):
            alone = conv(g.x, g.edge_index, g.edge_attr)
            assert torch.allclose(out[batch.ptr[i]:batch.ptr[i + 1]], alone, atol=1e-6)
    views = ng.graph_layer_views(batch)
    for (w, b), g in zip(views, graphs):
        ww, bb = ng.to_weights(g)
        assert all(torch.equal(x[..., 0], y) for x, y in zip(w, ww))
        assert all(torch.equal(x[:, 0], y) for x, y in zip(b, bb))
    with pytest.raises(ValueError, match='different architectures'):
        stacked_layer_views(batch)


def test_with_layers_leaves_the_input_alone():
    g = ng.from_weights(*random_weights([2, 5, 1]))
    before = (g.x.clone(), g.edge_attr.clone())
    w, b = ng.layer_views(g)
    h = ng.with_layers(g, [t * 2 for t in w], [t + 1 for t in b])
    assert torch.equal(g.x, before[0]) and torch.equal(g.edge_attr, before[1])
    assert torch.equal(h.edge_attr, before[1] * 2)
    assert torch.equal(h.x[2:], before[0][2:] + 1) and torch.equal(h.x[:2], before[0][:2])


@pytest.mark.parametrize('act', ['relu', 'tanh', 'sine:30.0', 'gelu'])
def test_permute_hidden_preserves_the_function(act):
    torch.manual_seed(0)
    g = ng.from_weights(*random_weights([2, 16, 8, 3]), activation=act)
    w, b = ng.layer_views(g)
    perms = [torch.randperm(16), torch.randperm(8)]
    h = ng.with_layers(g, *ng.permute_hidden(w, b, perms))
    assert not torch.equal(h.edge_attr, g.edge_attr)
    x = inputs(64, 2)
    assert torch.allclose(ng.forward(h, x), ng.forward(g, x), atol=1e-5)
    # undoing the permutation gives the graph back bit for bit
    inverse = [torch.argsort(p) for p in perms]
    back = ng.with_layers(h, *ng.permute_hidden(*ng.layer_views(h), inverse))
    assert torch.equal(back.edge_attr, g.edge_attr) and torch.equal(back.x, g.x)


@pytest.mark.parametrize('act, kind', [('tanh', 'sign'), ('sine:30.0', 'sign'),
                                       ('relu', 'positive'), ('leaky_relu:0.1', 'positive')])
def test_rescale_hidden_preserves_the_function(act, kind):
    torch.manual_seed(0)
    g = ng.from_weights(*random_weights([3, 12, 6, 2]), activation=act)
    if kind == 'sign':
        scales = [torch.randint(0, 2, (12,)) * 2.0 - 1, torch.randint(0, 2, (6,)) * 2.0 - 1]
    else:
        scales = [torch.rand(12) * 3 + 0.2, torch.rand(6) * 3 + 0.2]
    h = ng.with_layers(g, *ng.rescale_hidden(*ng.layer_views(g), scales))
    x = inputs(64, 3)
    assert torch.allclose(ng.forward(h, x), ng.forward(g, x), atol=1e-5)


def test_stacked_algebra_equals_per_graph_algebra():
    torch.manual_seed(0)
    graphs = [ng.from_weights(*random_weights([2, 6, 5, 1], seed=s)) for s in range(4)]
    batch = Batch.from_data_list(graphs)
    perms = [torch.stack([torch.randperm(6) for _ in range(4)]),
             torch.stack([torch.randperm(5) for _ in range(4)])]
    scales = [torch.rand(4, 6) + 0.5, torch.rand(4, 5) + 0.5]
    out = ng.with_stacked_layers(batch, *ng.rescale_hidden(
        *ng.permute_hidden(*ng.stacked_layer_views(batch), perms), scales))
    for i, g in enumerate(graphs):
        one = ng.with_layers(g, *ng.rescale_hidden(
            *ng.permute_hidden(*ng.layer_views(g), [p[i] for p in perms]), [s[i] for s in scales]))
        got = out.get_example(i)
        assert torch.equal(got.edge_attr, one.edge_attr) and torch.equal(got.x, one.x)


@pytest.mark.parametrize('weights, biases, message', [
    ([torch.zeros(4, 2), torch.zeros(1, 5)], None, r'layer 1 has shape \(1, 5\) but layer 0 outputs 4'),
    ([torch.zeros(4, 2)], [torch.zeros(3)], r'bias of layer 0 must have shape \(4,\), got \(3,\)'),
    ([torch.zeros(4)], None, r'weight of layer 0 must be a 2-D tensor'),
    ([torch.zeros(4, 2), torch.zeros(1, 4, dtype=torch.float64)], None, 'one dtype'),
    ([torch.zeros(4, 2, dtype=torch.long)], None, 'floating point'),
    ([torch.zeros(4, 2), torch.full((1, 4), float('nan'))], None, r'weight of layer 1 holds 4 NaN or Inf'),
    ([torch.zeros(4, 2)], [torch.tensor([0, float('inf'), 0, 0])], r'bias of layer 0 holds 1 NaN or Inf'),
    ([], None, 'at least one weight matrix'),
])
def test_from_weights_rejects_bad_input(weights, biases, message):
    with pytest.raises(ValueError, match=message):
        ng.from_weights(weights, biases)


def test_from_weights_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ng.from_weights(*random_weights([2, 3, 1]), activation='swish')


def test_nonfinite_error_names_the_layer_key():
    weights, biases = random_weights([2, 3, 1])
    weights[1][0, 0] = float('inf')
    with pytest.raises(ValueError, match="weight of layer 'head' holds 1 NaN or Inf"):
        ng.from_weights(weights, biases, names=['body', 'head'])


def test_to_networkx_matches_the_graph():
    weights, biases = random_weights([2, 3, 1])
    g = ng.from_weights(weights, biases)
    nxg = ng.to_networkx(g)
    assert nxg.number_of_nodes() == 6 and nxg.number_of_edges() == 9
    assert nxg.edges[1, 2]['weight'] == pytest.approx(float(weights[0][0, 1]))
    assert nxg.nodes[5]['layer'] == 2 and nxg.nodes[5]['bias'] == pytest.approx(float(biases[1][0]))


def test_draw_writes_a_png(tmp_path):
    g = ng.from_module(mlp([2, 6, 6, 1], 'sine:30.0'))
    path = tmp_path / 'sub' / 'graph.png'
    ng.draw(g, path)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert [p.name for p in path.parent.iterdir()] == ['graph.png']  # no temp file left
    with pytest.raises(ValueError, match='more than max_edges=10'):
        ng.draw(g, tmp_path / 'big.png', max_edges=10)


def test_huge_finite_weights_are_accepted():
    # their sum overflows to inf in float32; the exact per-layer check clears it
    big = torch.full((4, 2), 3e38)
    g = ng.from_weights([big, torch.ones(1, 4)], activation='relu')
    assert torch.equal(ng.to_weights(g)[0][0], big)


def test_forward_all_layers_gives_every_layer_for_graphs_and_batches():
    weights, biases = random_weights([2, 6, 5, 3], seed=4)
    g = ng.from_weights(weights, biases, activation='tanh')
    x = inputs(11, 2)
    outs = ng.forward(g, x, all_layers=True)
    assert [o.shape for o in outs] == [(11, 2), (11, 6), (11, 5), (11, 3)]
    assert outs[0] is x and torch.equal(outs[-1], ng.forward(g, x))
    assert torch.allclose(outs[1], torch.tanh(x @ weights[0].t() + biases[0]), atol=1e-6)
    assert torch.allclose(outs[2], torch.tanh(outs[1] @ weights[1].t() + biases[1]), atol=1e-6)
    batch = Batch.from_data_list([g, ng.from_weights(*random_weights([2, 6, 5, 3], seed=5), activation='tanh')])
    stacked = ng.forward(batch, x, all_layers=True)
    assert [o.shape for o in stacked] == [(2, 11, 2), (2, 11, 6), (2, 11, 5), (2, 11, 3)]
    assert all(torch.allclose(s[0], o, atol=1e-6) for s, o in zip(stacked, outs))


def test_batch_forward_with_differing_activations_is_each_graphs_forward():
    # one architecture, several activations (the encoder's probe features read such
    # batches; found by tests/test_pyg_conformance.py)
    acts = ('tanh', 'relu', ('sine:30.0', 'identity'), 'tanh')
    graphs = [ng.from_weights(*random_weights([2, 3, 1], seed=i), activation=a) for i, a in enumerate(acts)]
    x = inputs(4, 2)
    stacked = ng.forward(Batch.from_data_list(graphs), x, all_layers=True)
    for i, g in enumerate(graphs):
        for s, o in zip(stacked, ng.forward(g, x, all_layers=True)):
            assert torch.allclose(s[i], o, atol=1e-6)


# --------------------------------------------------------------------------- #
# Reading files from others (issue 19, row 14)
# --------------------------------------------------------------------------- #

def _saved(tmp_path, record):
    path = tmp_path / 'graphs.pt'
    torch.save(record, path)
    return path


def _valid_record():
    g = ng.from_weights(*random_weights([2, 3, 1]), activation='relu')
    return {'format': 'nngraph.graphs', 'version': 1, 'kind': 'data', 'graphs': [g.to_dict()]}


def _truncated(tmp_path):
    ng.save(ng.from_weights(*random_weights([2, 3, 1])), tmp_path / 'whole.pt')
    data = (tmp_path / 'whole.pt').read_bytes()
    (tmp_path / 'graphs.pt').write_bytes(data[:len(data) // 2])
    return tmp_path / 'graphs.pt'


def _written(tmp_path, data):
    (tmp_path / 'graphs.pt').write_bytes(data)
    return tmp_path / 'graphs.pt'


@pytest.mark.parametrize('make, message', [
    (lambda p: _written(p, b''), r'is empty \(0 bytes\), not a file of graphs written by nngraph.save'),
    (lambda p: _written(p, bytes(range(256)) * 3), r'is not a file of graphs .* \(truncated or corrupt\?'),
    (_truncated, r'is not a file of graphs .*truncated or corrupt\? RuntimeError: PytorchStreamReader failed'),
    (lambda p: _saved(p, ng.from_weights(*random_weights([2, 3, 1]))),
     r'a pickled PyG Data or Batch .* written by torch.save, not by nngraph.save.*'
     r'nngraph.save\(torch.load\(path, weights_only=False\), new_path\)'),
    (lambda p: _saved(p, {'a': torch.zeros(1)}), r"not written by nngraph.save \(it holds a dict with keys \['a'\]\)"),
    (lambda p: _saved(p, [1, 2]), r'not written by nngraph.save \(it holds a list\)'),
    (lambda p: _saved(p, {'format': 'nngraph.graphs'}), r"malformed nngraph file: it has no 'version', 'kind', 'graphs'"),
    (lambda p: _saved(p, {**_valid_record(), 'version': 7}), 'nngraph file version 7; this nngraph reads version 1'),
    (lambda p: _saved(p, {**_valid_record(), 'kind': 'tree'}), "'kind' is 'tree', expected one of"),
    (lambda p: _saved(p, {**_valid_record(), 'graphs': 5}), "'graphs' holds an object of type int for kind 'data'"),
    (lambda p: _saved(p, {**_valid_record(), 'graphs': []}), "'graphs' holds 0 graphs for kind 'data'"),
    (lambda p: _saved(p, {**_valid_record(), 'graphs': ['x']}), 'graph 0 is a str, not a dict of fields'),
    (lambda p: _saved(p, {**_valid_record(), 'graphs': [{'x': torch.zeros(3, 1)}]}),
     'graph 0 is not a parameter graph: no tensor edge_index, edge_attr'),
    (lambda p: _saved(p, {**_valid_record(), 'graphs': [{**_valid_record()['graphs'][0], 'layer_sizes': (2, 4, 1)}]}),
     r'graph 0: layer_sizes \(2, 4, 1\) describe 7 nodes and 12 edges, but x has 6'),
    (lambda p: _saved(p, {**_valid_record(), 'graphs': [{**_valid_record()['graphs'][0], 'x': torch.full((6, 1), float('nan'))}]}),
     r'graph 0: x \(biases\) holds 6 NaN or Inf value\(s\), the first in neuron layer 0'),
    (lambda p: _saved(p, {**_valid_record(), 'graphs': [{**_valid_record()['graphs'][0], 'edge_index': torch.zeros(2, 9)}]}),
     r'graph 0: edge_index must be a long tensor \[2, E\], got torch.float32'),
], ids=['empty', 'random-bytes', 'truncated', 'torch-save-Data', 'foreign-dict', 'list', 'missing-keys', 'version',
        'kind', 'graphs-type', 'no-graphs', 'graph-type', 'missing-tensors', 'wrong-sizes', 'nan', 'edge-dtype'])
def test_load_explains_every_bad_file_in_one_line_naming_it(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        ng.load(path)
    assert str(path) in str(err.value) and '\n' not in str(err.value)


def test_load_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match='no file at'):
        ng.load(tmp_path / 'missing.pt')


def test_save_refuses_graphs_load_would_refuse(tmp_path):
    g = ng.from_weights(*random_weights([2, 3, 1]))
    g.edge_attr = g.edge_attr.clone()
    g.edge_attr[7, 0] = float('nan')   # W_0 is 3 x 2: edges 0-5; W_1 edges 6-8
    with pytest.raises(ValueError, match=r'save: graph 0: edge_attr \(weights\) holds 1 NaN or Inf value\(s\), '
                                         r'the first in weight matrix 1 \(row 7\)'):
        ng.save(g, tmp_path / 'g.pt')
    assert not (tmp_path / 'g.pt').exists()
    batch = Batch.from_data_list([ng.from_weights(*random_weights([2, 3, 1])), g])
    with pytest.raises(ValueError, match=r'save: graph 1: edge_attr \(weights\) holds 1 NaN'):
        ng.save(batch, tmp_path / 'g.pt')


def test_readers_of_a_network_refuse_nonfinite_parameters_and_wrong_inputs():
    g = ng.from_weights(*random_weights([2, 3, 1]))
    g.x = g.x.clone()
    g.x[3, 0] = float('inf')
    for read in (ng.to_weights, lambda h: ng.forward(h, torch.zeros(1, 2)), ng.to_module):
        with pytest.raises(ValueError, match=r'x \(biases\) holds 1 NaN or Inf value\(s\), the first in neuron layer 1'):
            read(g)
    ok = ng.from_weights(*random_weights([2, 3, 1]))
    with pytest.raises(ValueError, match='inputs are torch.float64 but the network.s weights are torch.float32'):
        ng.forward(ok, torch.zeros(1, 2, dtype=torch.float64))
