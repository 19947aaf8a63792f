"""Random state dicts and random files fed to ``from_checkpoint`` (issue 19):
it returns a graph that round-trips, or raises one line of ``ValueError``
naming the culprit (a key, or the file); never another exception, never a hang
(an ordering of 100 layers is answered in well under a second)."""
import math
import os
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nngraph as ng
from nngraph.checkpoints import chain_layers, load_state_dict
from tests.helpers import random_weights

WIDTHS = st.integers(1, 5)
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                          torch.bool, torch.complex64, torch.float8_e4m3fn])
KEYS = st.one_of(
    st.sampled_from(['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', 'w0', 'b0', 'w1', 'b1', 'layers.0.W',
                     'layers.0.b', 'head.weight', 'weight_3', 'bias_3', 'module.x.weight', 'norm.scale']),
    st.text(alphabet='abwW._019', min_size=1, max_size=8),
)


@st.composite
def tensors(draw):
    shape = tuple(draw(st.lists(WIDTHS, min_size=0, max_size=3)))
    dtype = draw(DTYPES)
    t = torch.zeros(shape, dtype=torch.float64).uniform_(-1, 1, generator=torch.Generator().manual_seed(
        draw(st.integers(0, 2**16)))) if shape else torch.tensor(draw(st.floats(-1, 1)))
    if t.numel() and draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return t.to(dtype)


VALUES = st.one_of(tensors(), tensors(), tensors(), st.integers(), st.text(max_size=5), st.none(),
                   st.lists(st.integers(), max_size=3))


@st.composite
def chains(draw):
    """A state dict that is one MLP, in key order, with some biases missing, and
    sometimes damaged: a shuffled key order, a shape cycle, NaN, an odd dtype, an extra key."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=2, max_size=6))
    weights, biases = random_weights(sizes, seed=draw(st.integers(0, 2**16)))
    state = {}
    for l, (w, b) in enumerate(zip(weights, biases)):
        state[f'net.{l}.weight'] = w
        if draw(st.booleans()):
            state[f'net.{l}.bias'] = b
    items = list(state.items())
    damage = draw(st.sampled_from(['none', 'cycle', 'head', 'nan', 'dtype', 'extra', 'reverse']))
    if damage == 'reverse':
        items = items[::-1]
    elif damage == 'cycle':   # a layer that leads back to the input width
        items.append(('back.weight', torch.zeros(sizes[0], sizes[-1])))
    elif damage == 'head':    # a second head beside the last layer
        items.append(('head2.weight', torch.zeros(draw(WIDTHS), sizes[-2])))
    elif damage == 'nan':
        k = draw(st.integers(0, len(items) - 1))
        items[k] = (items[k][0], items[k][1].clone().fill_(math.nan))
    elif damage == 'dtype':
        k = draw(st.integers(0, len(items) - 1))
        items[k] = (items[k][0], items[k][1].to(draw(DTYPES)))
    elif damage == 'extra':
        items.append((draw(KEYS), draw(VALUES)))
    if draw(st.booleans()):   # key order lost: the shapes (and the names' numbering) decide
        items = draw(st.permutations(items))
    return dict(items)


def _check(source, keys):
    """from_checkpoint's answer: a graph whose state dict gives the weights back
    bit for bit, or a one-line ValueError naming a key or the file."""
    start = time.perf_counter()
    try:
        g = ng.from_checkpoint(source, 'relu')
    except ValueError as err:
        message = str(err)
        assert message and '\n' not in message, message
        if isinstance(source, (str, os.PathLike)):
            assert os.fspath(source) in message, message
        else:
            named = [k for k in keys if f"'{k}'" in message or f"'{k.removeprefix('module.')}'" in message]
            general = ('is empty', 'no 2-D weight matrices', 'layer_sizes')
            assert named or any(g in message for g in general), message
        return None
    finally:
        assert time.perf_counter() - start < 2.0
    # The graph holds the checkpoint's tensors bit for bit, in their own dtype, and
    # its state dict reads back as the same network.
    flat, _ = load_state_dict(source)
    weights, biases = ng.to_weights(g)
    for l, (wk, w, bk, b) in enumerate(chain_layers(flat)):
        assert torch.equal(weights[l], w) and weights[l].dtype == w.dtype, wk
        assert torch.equal(biases[l], torch.zeros_like(w[:, 0]) if b is None else b), bk
    again = ng.to_weights(ng.from_checkpoint(ng.to_state_dict(g), 'relu'))
    assert all(torch.equal(a, b) for a, b in zip(again[0] + again[1], weights + biases))
    return g


@settings(max_examples=50, deadline=None, derandomize=True)
@given(state=st.dictionaries(KEYS, VALUES, max_size=6))
def test_random_state_dicts(state):
    _check(state, list(state))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(state=chains())
def test_damaged_chains(state):
    _check(state, list(state))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(state=chains(), cut=st.integers(0, 4000), data=st.binary(max_size=300), how=st.sampled_from(
    ['truncate', 'flip', 'random', 'prefix']))
def test_random_files(tmp_path_factory, state, cut, data, how):
    path = tmp_path_factory.mktemp('ckpt') / 'model.pt'
    torch.save(state, path)
    raw = path.read_bytes()
    if how == 'truncate':
        raw = raw[:cut % (len(raw) + 1)]
    elif how == 'flip':
        k = cut % len(raw)
        raw = raw[:k] + bytes([raw[k] ^ 0xFF]) + raw[k + 1:]
    elif how == 'random':
        raw = data
    else:
        raw = data + raw
    path.write_bytes(raw)
    _check(path, list(state))
