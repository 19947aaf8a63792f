"""Random corruptions of valid parameter graphs (issue 19): every public reader
refuses them with a ``ValueError`` that names what is wrong, never a torch
``IndexError``/``RuntimeError`` from deep inside an operation."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nngraph as ng
from tests.helpers import random_weights

FIELDS = ('x', 'edge_index', 'edge_attr', 'layer', 'layer_sizes', 'activation')


def _graph(sizes, seed, dtype):
    weights, biases = random_weights(sizes, seed=seed, dtype=dtype)
    return ng.from_weights(weights, biases, 'tanh')


def _corrupt(g, kind, k, value):
    """A shallow copy of ``g`` with one thing broken; ``k`` and ``value`` pick where and how."""
    g = copy.copy(g)
    E, N = g.edge_attr.size(0), g.x.size(0)
    if kind == 'layer_sizes':
        g.layer_sizes = [value, *g.layer_sizes[1:]] if k % 2 else list(g.layer_sizes[:-1])
    elif kind == 'layer_sizes_type':
        g.layer_sizes = ['a', None, 2.5, 7, (3, 'b')][k % 5]
    elif kind == 'truncate_edge_attr':
        g.edge_attr = g.edge_attr[: E - 1 - k % E]
    elif kind == 'extra_edge_attr':
        g.edge_attr = torch.cat([g.edge_attr, g.edge_attr[: 1 + k % E]])
    elif kind == 'edge_attr_channels':
        g.edge_attr = g.edge_attr.reshape(-1) if k % 2 else g.edge_attr.unsqueeze(0)
    elif kind == 'edit_edge_index':
        ei = g.edge_index.clone()
        ei[k % 2, k % E] = value
        g.edge_index = ei
    elif kind == 'swap_edges' and E > 1:
        ei = g.edge_index.clone()
        ei[:, [0, k % E]] = ei[:, [k % E, 0]]
        g.edge_index = ei
    elif kind == 'edge_index_shape':
        g.edge_index = [g.edge_index[:1], g.edge_index.reshape(-1), g.edge_index.t()][k % 3]
    elif kind == 'dtype':
        field = ('x', 'edge_attr', 'edge_index', 'layer')[k % 4]
        target = (torch.int64, torch.float64, torch.int32, torch.bool, torch.float16)[value % 5]
        g[field] = g[field].to(target)
    elif kind == 'nan':
        field = ('x', 'edge_attr')[k % 2]
        t = g[field].clone()
        t.view(-1)[value % t.numel()] = (float('nan'), float('inf'), -float('inf'))[k % 3]
        g[field] = t
    elif kind == 'delete':
        del g[FIELDS[k % len(FIELDS)]]
    elif kind == 'not_a_tensor':
        g[('x', 'edge_attr', 'edge_index', 'layer')[k % 4]] = [1.0, 2.0]
    elif kind == 'activation':
        g.activation = ('bogus', 5, None, ('relu',) * 7)[k % 4]
    elif kind == 'layer':
        layer = g.layer.clone()
        layer[k % N] = value
        g.layer = layer
    return g


KINDS = ('layer_sizes', 'layer_sizes_type', 'truncate_edge_attr', 'extra_edge_attr', 'edge_attr_channels',
         'edit_edge_index', 'swap_edges', 'edge_index_shape', 'dtype', 'nan', 'delete', 'not_a_tensor',
         'activation', 'layer')

# Corruptions no reader may accept (the others can leave a valid graph, e.g. an
# edit that writes the value already there, or a float64 graph turned float64).
ALWAYS_BROKEN = ('truncate_edge_attr', 'extra_edge_attr', 'edge_index_shape', 'edge_attr_channels',
                 'not_a_tensor', 'layer_sizes_type')

corruptions = st.fixed_dictionaries({
    'sizes': st.lists(st.integers(1, 5), min_size=2, max_size=4),
    'seed': st.integers(0, 2**16),
    'dtype': st.sampled_from([torch.float32, torch.float64]),
    'kind': st.sampled_from(KINDS),
    'k': st.integers(0, 1000),
    'value': st.integers(-3, 40),
})


def _refused_or_fine(call, name):
    """Runs ``call``: the message of its refusal (one line of ``ValueError``),
    or ``None`` where it accepted; any other exception fails the test."""
    try:
        call()
    except ValueError as err:
        assert str(err) and '\n' not in str(err), (name, str(err))
        return str(err)
    return None


@settings(max_examples=50, deadline=None, derandomize=True)
@given(case=corruptions)
def test_corrupt_graphs_are_refused_by_every_reader(case, tmp_path_factory):
    g = _graph(case['sizes'], case['seed'], case['dtype'])
    bad = _corrupt(g, case['kind'], case['k'], case['value'])
    inputs = torch.randn(3, case['sizes'][0], dtype=case['dtype'])
    refusals = {
        'validate': _refused_or_fine(lambda: ng.validate(bad), 'validate'),
        'to_weights': _refused_or_fine(lambda: ng.to_weights(bad), 'to_weights'),
        'forward': _refused_or_fine(lambda: ng.forward(bad, inputs), 'forward'),
    }
    path = tmp_path_factory.mktemp('fuzz') / 'g.pt'
    refusals['save'] = _refused_or_fine(lambda: ng.save(bad, path), 'save')
    if refusals['save'] is None:
        back = ng.load(path)   # what save accepts, load reads back, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(ng.to_weights(back)[0], ng.to_weights(bad)[0]))
    # Readers agree: what validates is a network (unless its values are NaN), and a
    # network can be saved; what forward evaluates is a network.
    if refusals['validate'] is None and case['kind'] != 'nan':
        assert refusals['to_weights'] is None
    if refusals['to_weights'] is None or refusals['forward'] is None:
        assert refusals['to_weights'] is None and refusals['save'] is None
    if case['kind'] in ALWAYS_BROKEN:
        assert all(refusals.values()), refusals
    if case['kind'] == 'nan':
        assert refusals['validate'] is None and 'NaN or Inf' in refusals['to_weights'], refusals
