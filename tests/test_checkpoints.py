import collections
import itertools
import math
import random
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

import nngraph as ng
from nngraph.checkpoints import chain_layers, load_state_dict
from tests.helpers import SineLayer, inputs, mlp, random_weights


def assert_same_function(g, model, d_in, atol=0.0):
    x = inputs(50, d_in)
    with torch.no_grad():
        expected = model(x)
    got = ng.forward(g, x)
    if atol:
        assert torch.allclose(got, expected, atol=atol)
    else:
        assert torch.equal(got, expected)


# --------------------------------------------------------------------------- #
# from_module
# --------------------------------------------------------------------------- #

class Nested(nn.Module):
    """Named, nested layers; functional activations; registration order != call order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.encoder = nn.Module()
        self.encoder.fc2 = nn.Linear(16, 8)
        self.encoder.fc1 = nn.Linear(3, 16)

    def forward(self, x):
        h = F.leaky_relu(self.encoder.fc1(x), negative_slope=0.2)
        h = torch.tanh(self.encoder.fc2(h))
        return self.head(h)


class FunctionalSiren(nn.Module):
    def __init__(self):
        super().__init__()
        self.l0, self.l1, self.l2 = nn.Linear(2, 12), nn.Linear(12, 12), nn.Linear(12, 1)

    def forward(self, x):
        x = torch.sin(30.0 * self.l0(x))
        x = torch.sin(self.l1(x) * 30.0)
        return self.l2(x)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)

    def forward(self, x):
        if x.sum() > -1e9:
            x = self.act(self.fc1(x))
        return self.fc2(x)


def test_nested_custom_module_in_call_order():
    model = Nested()
    g = ng.from_module(model)
    assert g.layer_names == ('encoder.fc1', 'encoder.fc2', 'head')
    assert g.activation == ('leaky_relu:0.2', 'tanh', 'identity')
    assert g.layer_sizes == (3, 16, 8, 2)
    assert_same_function(g, model, 3)
    state = ng.to_state_dict(g)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_siren_layer_modules_and_first_layer_w0():
    model = nn.Sequential(SineLayer(2, 16, omega_0=60.0), SineLayer(16, 16), nn.Linear(16, 1))
    g = ng.from_module(model)
    assert g.activation == ('sine:60.0', 'sine:30.0', 'identity')
    assert g.layer_names == ('0.linear', '1.linear', '2')
    assert_same_function(g, model, 2)


def test_functional_sine_with_scalar_w0():
    model = FunctionalSiren()
    g = ng.from_module(model)
    assert g.activation == 'sine:30.0'
    assert_same_function(g, model, 2)


def test_untraceable_module_falls_back_to_registration_order():
    model = Branchy()
    g = ng.from_module(model)
    assert g.activation == 'relu' and g.layer_names == ('fc1', 'fc2')
    assert_same_function(g, model, 4)


def test_activation_override():
    class HandWrittenSiLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 4), nn.Linear(4, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(h * torch.sigmoid(h))

    with pytest.raises(ValueError, match=r"function mul \(node 'mul'\) is not a Linear.*pass activation="):
        ng.from_module(HandWrittenSiLU())
    model = HandWrittenSiLU()
    g = ng.from_module(model, activation='silu')
    assert g.activation == 'silu'
    assert_same_function(g, model, 2, atol=1e-6)


@pytest.mark.parametrize('bad, message', [
    (nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)),
     r"module '1' \(BatchNorm1d: weight \(4,\), bias \(4,\)\) is a parameterised layer"),
    (nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 1)), r"module '1' \(LayerNorm"),
    (nn.Sequential(nn.Conv1d(1, 2, 3)), r"module '0' \(Conv1d"),
    (nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(5, 1)),
     r"layer '2' takes 5 features but the previous layer '0' outputs 4"),
    (nn.Sequential(nn.Dropout()), 'has no nn.Linear layers'),
    (nn.Sequential(nn.Tanh(), nn.Linear(2, 1)), r"activation 'tanh' \(module '0'\) comes before the first Linear"),
    (nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.Linear(4, 1)),
     r"module '1' \(Softplus\) is not a Linear layer or a known activation"),
])
def test_from_module_rejects_non_mlps(bad, message):
    with pytest.raises(ValueError, match=message):
        ng.from_module(bad)


def test_from_module_rejects_unused_parameters_and_shared_layers():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.spare = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.a(x)

    with pytest.raises(ValueError, match='parameters outside the chain of Linear layers: spare.weight'):
        ng.from_module(Unused())

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(torch.relu(self.a(x)))

    with pytest.raises(ValueError, match="layer 'a' is called more than once"):
        ng.from_module(Shared())


def test_from_module_rejects_non_modules():
    with pytest.raises(TypeError, match='expects an nn.Module, got dict'):
        ng.from_module({})


# --------------------------------------------------------------------------- #
# from_checkpoint
# --------------------------------------------------------------------------- #

def siren_state(sizes=(2, 16, 16, 1), seed=0):
    return mlp(sizes, 'sine:30.0', seed=seed).state_dict()


@pytest.mark.parametrize('wrap', [
    lambda s: s,
    lambda s: {'state_dict': s, 'epoch': 3, 'activation': 'ignored-by-explicit-arg'},
    lambda s: {'model': s, 'optimizer': {'lr': 0.1}},
    lambda s: {'net': s},
    lambda s: {'params': s},
    lambda s: {'model_state_dict': {f'module.{k}': v for k, v in s.items()}},
    lambda s: {f'_orig_mod.{k}': v for k, v in s.items()},
], ids=['plain', 'state_dict', 'model', 'net', 'params', 'ddp', 'compiled'])
@pytest.mark.parametrize('suffix', ['.pt', '.pth', 'dict'])
def test_checkpoint_forms_read_back_exactly(tmp_path, wrap, suffix):
    state = siren_state()
    obj = wrap(state)
    if suffix == 'dict':
        source = obj
    else:
        source = tmp_path / f'inr{suffix}'
        torch.save(obj, source)
    g = ng.from_checkpoint(source, 'sine:30.0')
    model = mlp((2, 16, 16, 1), 'sine:30.0')
    assert_same_function(g, model, 2)
    out = ng.to_state_dict(g)
    assert list(out) == list(state) and all(torch.equal(out[k], state[k]) for k in state)


def test_safetensors(tmp_path):
    # safetensors stores keys sorted: '10' before '2' must still chain right.
    model = mlp((2, 8, 8, 8, 8, 8, 8, 1), 'relu')
    state = {f'layers.{2 * (i // 2)}.{key.rsplit(".", 1)[1]}': value.contiguous()
             for i, (key, value) in enumerate(model.state_dict().items())}
    path = tmp_path / 'm.safetensors'
    save_file(state, str(path))
    g = ng.from_checkpoint(path, 'relu')
    assert g.layer_names == tuple(f'layers.{i}' for i in range(0, 14, 2))
    assert_same_function(g, model, 2)


def test_layers_are_ordered_by_chaining_shapes():
    model = mlp((3, 7, 5, 2), 'tanh')
    items = list(model.state_dict().items())
    shuffled = collections.OrderedDict(items[4:] + items[:2] + items[2:4])
    g = ng.from_checkpoint(shuffled, 'tanh')
    assert g.layer_sizes == (3, 7, 5, 2)
    assert_same_function(g, model, 3)


def test_key_order_breaks_ties_between_square_layers():
    w, b = random_weights((4, 4, 4, 4))
    state = {'first.weight': w[0], 'second.weight': w[1], 'third.weight': w[2]}
    g = ng.from_checkpoint(state, 'relu')
    assert g.layer_names == ('first', 'second', 'third')
    assert torch.equal(ng.to_weights(g)[0][1], w[1])


def test_other_key_conventions_pair_weights_with_biases():
    w, b = random_weights((2, 5, 1))
    for keys in (('w0', 'b0', 'w1', 'b1'), ('weight_0', 'bias_0', 'weight_1', 'bias_1'),
                 ('layers.0.W', 'layers.0.b', 'layers.1.W', 'layers.1.b')):
        state = dict(zip(keys, (w[0], b[0], w[1], b[1])))
        weights, biases = ng.to_weights(ng.from_checkpoint(state, 'relu'))
        assert torch.equal(biases[0], b[0]) and torch.equal(biases[1], b[1]), keys


def test_missing_biases_become_zeros_and_stay_missing_in_the_state_dict():
    w, _ = random_weights((2, 5, 1))
    g = ng.from_checkpoint({'a.weight': w[0], 'b.weight': w[1]}, 'relu')
    assert torch.equal(ng.to_weights(g)[1][0], torch.zeros(5))
    assert list(ng.to_state_dict(g)) == ['a.weight', 'b.weight']


def test_siren_conventions_are_options():
    state = siren_state((2, 8, 8, 1), seed=3)
    torch.manual_seed(0)
    g = ng.from_checkpoint(state, w0=30.0, first_w0=45.0, output_offset=0.5)
    assert g.activation == ('sine:45.0', 'sine:30.0', 'identity')
    x = inputs(40, 2)
    h = torch.sin(45.0 * F.linear(x, state['0.weight'], state['0.bias']))
    h = torch.sin(30.0 * F.linear(h, state['2.weight'], state['2.bias']))
    expected = F.linear(h, state['4.weight'], state['4.bias']) + 0.5
    assert torch.allclose(ng.forward(g, x), expected, atol=1e-6)


def test_activation_read_from_checkpoint_metadata(tmp_path):
    path = tmp_path / 'inr.pt'
    torch.save({'state_dict': siren_state(), 'activation': 'sine:30.0'}, path)
    assert ng.from_checkpoint(path).activation == 'sine:30.0'


def test_weights_only_never_unpickles_code(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save(nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match='could not be read as a PyTorch checkpoint with weights_only=True'):
        ng.from_checkpoint(path, 'relu')


@pytest.mark.parametrize('state, message', [
    ({}, 'is empty: it holds no tensors'),
    ({'state_dict': {}, 'epoch': 1}, 'is empty'),
    ({'a.weight': torch.zeros(4, 2), 'b.weight': torch.zeros(1, 5)}, r"do not chain.*'a.weight' \(4, 2\), 'b.weight' \(1, 5\)"),
    ({'a.weight': torch.zeros(4, 2), 'a.bias': torch.zeros(4), 'emb': torch.zeros(9, 3)}, r"do not chain.*'emb' \(9, 3\)"),
    ({'a.weight': torch.zeros(4, 2), 'a.bias': torch.zeros(3)}, r"bias 'a.bias' has shape \(3,\) but its weight 'a.weight' has shape \(4, 2\)"),
    ({'a.weight': torch.zeros(4, 2), 'norm.scale': torch.zeros(4)}, r"not the bias of any weight: 'norm.scale' \(4,\)"),
    ({'conv.weight': torch.zeros(4, 2, 3)}, r"'conv.weight' has shape \(4, 2, 3\)"),
    ({'a.weight': torch.zeros(4, 2, dtype=torch.long)}, 'must be floating point'),
    ({'a.weight': torch.zeros(4, 2), 'b.weight': torch.full((1, 4), float('nan'))}, "weight of layer 'b' holds 4 NaN"),
])
def test_bad_checkpoints(state, message):
    with pytest.raises(ValueError, match=message):
        ng.from_checkpoint(state, 'relu')


def test_activation_must_be_given_or_recorded():
    with pytest.raises(ValueError, match='does not record its activation'):
        ng.from_checkpoint(siren_state())
    with pytest.raises(ValueError, match='w0=30.0 is for SIRENs'):
        ng.from_checkpoint(siren_state(), 'relu', w0=30.0)
    with pytest.raises(ValueError, match='first_w0 is for SIRENs'):
        ng.from_checkpoint(siren_state(), 'relu', first_w0=30.0)


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / 'notes.pt'
    text.write_text('hello, I am not a checkpoint')
    with pytest.raises(ValueError, match="notes.pt' is not a PyTorch checkpoint|could not be read"):
        ng.from_checkpoint(text, 'relu')
    fake = tmp_path / 'fake.safetensors'
    fake.write_bytes(b'\x00\x01garbage')
    with pytest.raises(ValueError, match='is not a valid safetensors file'):
        ng.from_checkpoint(fake, 'relu')
    with pytest.raises(FileNotFoundError, match='no checkpoint at'):
        ng.from_checkpoint(tmp_path / 'missing.pt', 'relu')
    torch.save([1, 2, 3], tmp_path / 'list.pt')
    with pytest.raises(ValueError, match='holds a list, not a dict of tensors'):
        ng.from_checkpoint(tmp_path / 'list.pt', 'relu')
    with pytest.raises(TypeError, match='expects a path or a dict'):
        ng.from_checkpoint(42, 'relu')


def test_nested_param_trees_are_flattened():
    w, b = random_weights((2, 3, 1))
    tree = {'params': {'dense_0': {'weight': w[0], 'bias': b[0]}, 'dense_1': {'weight': w[1], 'bias': b[1]}}}
    state, _ = load_state_dict(tree)
    assert list(state) == ['dense_0.weight', 'dense_0.bias', 'dense_1.weight', 'dense_1.bias']
    assert [k for k, *_ in chain_layers(state)] == ['dense_0.weight', 'dense_1.weight']
    assert math.isclose(float(ng.to_weights(ng.from_checkpoint(tree, 'relu'))[1][1]), float(b[1]))


def test_output_activation_and_nested_sequentials():
    model = nn.Sequential(nn.Sequential(nn.Linear(3, 6), nn.GELU()),
                          nn.Sequential(nn.Linear(6, 6), nn.SiLU(), nn.Dropout(0.0)),
                          nn.Linear(6, 2), nn.Sigmoid())
    g = ng.from_module(model)
    assert g.activation == ('gelu', 'silu', 'sigmoid')
    assert g.layer_names == ('0.0', '1.0', '2')
    assert_same_function(g, model.eval(), 3)
    assert_same_function(g, ng.to_module(g), 3)


# --------------------------------------------------------------------------- #
# Ordering layers in polynomial time (issue 19, row 2)
# --------------------------------------------------------------------------- #

def actor_critic(n, *, seed=0, stem=None):
    """n square 16x16 trunk layers in shuffled key order, a policy head (4, 16)
    and a value head (1, 16); ``stem`` adds an input layer of that many inputs."""
    keys = [(f'trunk.{i}.weight', (16, 16)) for i in range(n)] + [('pi.weight', (4, 16)), ('v.weight', (1, 16))]
    if stem:
        keys.append(('stem.weight', (16, stem)))
    random.Random(seed).shuffle(keys)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*shape, generator=gen) for k, shape in keys}


@pytest.mark.parametrize('n', [8, 10, 12, 100])
def test_actor_critic_is_refused_at_once_naming_both_heads(n):
    # The old depth-first search took 0.8 s at n=8, 68 s at n=10 and hours at n=12
    # to give this same answer: two heads are not one chain.
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        ng.from_checkpoint(actor_critic(n), 'relu')
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert 'do not chain' in message and 'several heads' in message and 'layers=' in message
    assert "output by 'pi.weight'" in message and "output by 'v.weight'" in message
    assert '\n' not in message


def test_layers_reads_one_chain_of_a_network_with_heads():
    state = actor_critic(100, stem=3)
    start = time.perf_counter()
    with pytest.raises(ValueError, match='several heads'):
        ng.from_checkpoint(state, 'relu')
    order = ['stem'] + [f'trunk.{i}.weight' for i in range(100)] + ['pi']
    g = ng.from_checkpoint(state, 'relu', layers=order)
    assert time.perf_counter() - start < 2.0
    assert g.layer_names == tuple(k.removesuffix('.weight') for k in order)
    assert g.layer_sizes == (3,) + (16,) * 101 + (4,)
    assert torch.equal(ng.to_weights(g)[0][5], state['trunk.4.weight'])
    with pytest.raises(ValueError, match=r"layer 'v.weight' \(1, 16\) takes 16 features but the previous "
                                         r"layer in layers=, 'pi.weight' \(4, 16\), outputs 4"):
        ng.from_checkpoint(state, 'relu', layers=['stem', 'pi', 'v'])
    with pytest.raises(ValueError, match=r"layers= names 'critic', but the checkpoint has no weight 'critic'"):
        ng.from_checkpoint(state, 'relu', layers=['stem', 'critic'])
    with pytest.raises(ValueError, match="layers= names 'pi.weight' twice"):
        ng.from_checkpoint(state, 'relu', layers=['pi', 'pi.weight'])


def test_one_hundred_shuffled_layers_with_one_chain_are_ordered_at_once():
    state = actor_critic(100, stem=3, seed=1)
    del state['v.weight']
    state = {k.replace('trunk.', 'trunk_'): v for k, v in state.items()}   # 'stem', 'pi': not numbered
    start = time.perf_counter()
    g = ng.from_checkpoint(state, 'relu')
    assert time.perf_counter() - start < 2.0
    # The shapes fix the stem first and the head last; square layers keep key order.
    trunk = [k.removesuffix('.weight') for k in state if k.startswith('trunk_')]
    assert g.layer_names == ('stem', *trunk, 'pi')


def test_numbered_names_order_a_dict_whose_key_order_was_lost():
    # Several chains fit these shapes (16->32->16 or 16->16 first); the numbering says which.
    shapes = {'layers.0.weight': (16, 3), 'layers.1.weight': (32, 16), 'layers.2.weight': (16, 32),
              'layers.3.weight': (16, 16), 'layers.10.weight': (16, 16), 'layers.11.weight': (2, 16)}
    state = {k: torch.randn(*shapes[k]) for k in ('layers.3.weight', 'layers.11.weight', 'layers.0.weight',
                                                  'layers.10.weight', 'layers.2.weight', 'layers.1.weight')}
    g = ng.from_checkpoint(state, 'relu')
    assert g.layer_names == ('layers.0', 'layers.1', 'layers.2', 'layers.3', 'layers.10', 'layers.11')


def test_several_chains_are_refused_naming_two_of_them():
    state = {'head.weight': torch.randn(2, 16), 'up.weight': torch.randn(32, 16),
             'down.weight': torch.randn(16, 32), 'mix.weight': torch.randn(16, 16), 'stem.weight': torch.randn(16, 3)}
    with pytest.raises(ValueError) as err:
        ng.from_checkpoint(state, 'relu')
    message = str(err.value)
    assert "after 'stem.weight' both 'up.weight' (32, 16) and 'mix.weight' (16, 16) fit" in message
    assert ("e.g. [stem.weight, up.weight, down.weight, mix.weight, head.weight] or "
            "[stem.weight, mix.weight, up.weight, down.weight, head.weight]") in message
    assert 'pass layers=' in message
    g = ng.from_checkpoint(state, 'relu', layers=['stem', 'mix', 'up', 'down', 'head'])
    assert g.layer_sizes == (3, 16, 16, 32, 16, 2)


def _old_order(shapes):
    """The order the depth-first search gave before issue 19: the first chain in
    key order (lexicographically smallest list of key positions), or None."""
    chains = [p for p in itertools.permutations(range(len(shapes)))
              if all(shapes[b][1] == shapes[a][0] for a, b in zip(p, p[1:]))]
    return (min(chains), chains) if chains else (None, [])


@settings(max_examples=50, deadline=None, derandomize=True)
@given(shapes=st.lists(st.tuples(st.sampled_from([2, 3, 4]), st.sampled_from([2, 3, 4])),
                       min_size=1, max_size=6))
def test_ordering_agrees_with_the_old_search_wherever_the_shapes_decide(shapes):
    # Keys without digits: the numbering rule does not apply, so only key order and shapes decide.
    keys = [f'{chr(ord("a") + i)}.weight' for i in range(len(shapes))]
    state = {k: torch.zeros(*s) for k, s in zip(keys, shapes)}
    old, chains = _old_order(shapes)
    if old is None:
        with pytest.raises(ValueError, match='do not chain'):
            chain_layers(state)
        return
    width_sequences = {tuple(shapes[i][1] for i in p) + (shapes[p[-1]][0],) for p in chains}
    key_order = tuple(range(len(shapes)))
    if key_order in chains or len(width_sequences) == 1:
        assert [k for k, *_ in chain_layers(state)] == [keys[i] for i in old]
    else:
        with pytest.raises(ValueError, match='chain in more than one order'):
            chain_layers(state)


@pytest.mark.parametrize('kind, message', [
    ('empty', r'is empty \(0 bytes\), not a PyTorch checkpoint'),
    ('random', r'is not a PyTorch checkpoint \(truncated or corrupt\?'),
    ('truncated', r'is not a PyTorch checkpoint \(truncated or corrupt\? RuntimeError: PytorchStreamReader'),
    ('pyg-data', r'could not be read as a PyTorch checkpoint with weights_only=True: it is a pickled PyG Data'),
    ('ng-save', r'holds graphs written by nngraph.save, not a state dict: read it with nngraph.load'),
    ('nan', r"weight of layer 'b' holds 4 NaN or Inf"),
])
def test_bad_files_are_refused_naming_the_file(tmp_path, kind, message):
    # issue 19, row 14: the same kinds of file that ng.load refuses
    path = tmp_path / 'model.pt'
    g = ng.from_weights(*random_weights((2, 4, 1)))
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'random':
        path.write_bytes(bytes(range(256)) * 3)
    elif kind == 'truncated':
        torch.save(siren_state(), path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == 'pyg-data':
        torch.save(g, path)
    elif kind == 'ng-save':
        ng.save(g, path)
    else:
        torch.save({'a.weight': torch.zeros(4, 2), 'b.weight': torch.full((1, 4), float('nan'))}, path)
    with pytest.raises(ValueError, match=message) as err:
        ng.from_checkpoint(path, 'relu')
    assert str(path) in str(err.value) and '\n' not in str(err.value)
