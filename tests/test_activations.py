import math

import pytest
import torch

from nngraph import activations as A


@pytest.mark.parametrize('spec, canon', [
    ('relu', 'relu'), ('sine', 'sine:30.0'), ('sine:30', 'sine:30.0'), ('sine:1e1', 'sine:10.0'),
    ('leaky_relu', 'leaky_relu:0.01'), ('leaky_relu:0.2', 'leaky_relu:0.2'), ('tanh', 'tanh'),
])
def test_canonical_spelling(spec, canon):
    assert A.canonical(spec) == canon
    assert A.canonical(canon) == canon


@pytest.mark.parametrize('spec', ['relu', 'leaky_relu:0.2', 'tanh', 'sigmoid', 'gelu', 'silu',
                                  'sine:30.0', 'identity'])
def test_module_and_function_agree(spec):
    z = torch.linspace(-3, 3, 101)
    act = A.get(spec)
    assert torch.equal(act(z), act.module()(z))


def test_symmetry_flags_hold_numerically():
    z = torch.linspace(-2, 2, 401, dtype=torch.float64)
    for name in A.names():
        act = A.get(name)
        if act.odd:
            assert torch.allclose(act(-z), -act(z)), name
        else:
            assert not torch.allclose(act(-z), -act(z)), name
        if act.homogeneous:
            assert torch.allclose(act(2.5 * z), 2.5 * act(z)), name
        if act.half_period is not None:
            assert torch.allclose(act(z + act.half_period), -act(z), atol=1e-12), name
    assert A.get('sine:30.0').half_period == pytest.approx(math.pi / 30)


@pytest.mark.parametrize('spec, message', [
    ('swish', "unknown activation 'swish'"),
    ('relu:2', "takes no parameter"),
    ('sine:abc', "'abc' is not a number"),
    ('sine:0', 'non-zero'),
    ('leaky_relu:nan', 'finite'),
])
def test_bad_strings(spec, message):
    with pytest.raises(ValueError, match=message):
        A.get(spec)


def test_per_layer_and_compact_are_inverse():
    assert A.per_layer('relu', 3) == ('relu', 'relu', 'identity')
    assert A.compact(('relu', 'relu', 'identity')) == 'relu'
    mixed = ('sine:60.0', 'sine:30.0', 'identity')
    assert A.compact(mixed) == mixed
    assert A.per_layer(mixed, 3) == mixed
    with pytest.raises(ValueError, match='2 activations for a network of 3 layers'):
        A.per_layer(('relu', 'relu'), 3)


def test_require_names_transform_and_activation():
    with pytest.raises(ValueError, match=r"RandomSignFlip needs an odd activation.*hidden layer 1.*'relu'"):
        A.require('relu', 3, 'odd', 'RandomSignFlip')
    assert len(A.require('tanh', 3, 'odd', 'RandomSignFlip')) == 2
