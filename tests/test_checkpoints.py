import collections
import math

import pytest
import torch
import torch.nn.functional as F
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
