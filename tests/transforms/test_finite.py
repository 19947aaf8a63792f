"""Non-finite values never travel through a transform (issue 19, row 6): every
public transform refuses a graph holding a NaN or an infinity, naming it, and
keeps every finite graph finite, however degenerate (zero layers, constant
layers, subnormal or large weights), on one graph and on a batch."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch_geometric.data import Batch
from torch_geometric.transforms import Compose

import nngraph.transforms as T
from nngraph.graph import from_weights

#: Magnitudes the property covers: squares of a layer's weights (WeightNoise's
#: spread, weight matching's similarities) stay far from float32's 3.4e38.
LIMIT = 2.0 ** 50          # ~1.1e15, exact in float32


def transforms(source):
    """One instance of every public transform, with the activation it needs."""
    return [
        (T.RandomNeuronPermutation(), 'sine:30.0'),
        (T.RandomSignFlip(0.5), 'sine:30.0'),
        (T.CanonicalSigns('bias'), 'tanh'),
        (T.CanonicalSigns('out'), 'tanh'),
        (T.SirenBiasShift(2), 'sine:30.0'),
        (T.SirenBiasFold(), 'sine:30.0'),
        (T.RandomPositiveScaling(0.5, 2.0), 'relu'),
        (T.InputRotation(180), 'sine:30.0'),
        (T.InputTranslation(0.5), 'sine:30.0'),
        (T.InputScaling(0.5, 2.0), 'sine:30.0'),
        (T.WeightNoise(0.1), 'sine:30.0'),
        (T.WeightDropout(0.3), 'sine:30.0'),
        (T.QuantileZeroing(0.5), 'sine:30.0'),
        (T.LabelSmoothing(0.1, 3), 'sine:30.0'),
        (T.WeightMixUp(source, 'vanilla', alpha=0.2, num_classes=3), 'sine:30.0'),
        (T.WeightMixUp(source, 'permute', alpha=0.2, num_classes=3), 'sine:30.0'),
        (T.WeightMixUp(source, 'align', alpha=0.2, signs=True, num_classes=3), 'sine:30.0'),
        (T.SelfAlignMixUp(alpha=0.2, noise=0.1), 'sine:30.0'),
    ]


def test_every_public_transform_is_covered():
    covered = {type(t).__name__ for t, _ in transforms([graph_of((2, 3, 1), [1.0] * 13, 'sine:30.0')])}
    assert covered == set(T.__all__)


def graph_of(sizes, values, activation, label=0):
    """A graph of ``sizes`` whose weights then biases are ``values`` (cycled)."""
    counts = [sizes[l + 1] * sizes[l] for l in range(len(sizes) - 1)] + list(sizes[1:])
    flat = torch.tensor((values * (sum(counts) // len(values) + 1))[:sum(counts)], dtype=torch.float32)
    parts = flat.split(counts)
    L = len(sizes) - 1
    weights = [parts[l].view(sizes[l + 1], sizes[l]) for l in range(L)]
    return from_weights(weights, list(parts[L:]), activation, y=torch.tensor([label]))


finite = st.floats(-LIMIT, LIMIT, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@st.composite
def networks(draw):
    """Architecture and parameter values; small sets of values (cycled over the
    network) make constant and zero layers common."""
    sizes = (draw(st.sampled_from([2, 3])), *draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)),
             draw(st.integers(1, 2)))
    a = draw(st.lists(finite, min_size=1, max_size=12))
    b = draw(st.lists(finite, min_size=1, max_size=12))
    return sizes, a, b, draw(st.integers(0, 2 ** 16))


def assert_finite(out, name):
    for field in ('edge_attr', 'x', 'y'):
        t = getattr(out, field, None)
        if t is not None and t.is_floating_point():
            assert torch.isfinite(t).all(), f'{name} turned a finite graph into non-finite {field}'


@settings(max_examples=30, deadline=None, derandomize=True)
@given(networks())
def test_finite_graphs_stay_finite(net):
    sizes, a, b, seed = net
    torch.manual_seed(seed)
    for act in ('sine:30.0', 'tanh', 'relu'):
        g, h = graph_of(sizes, a, act, 0), graph_of(sizes, b, act, 2)
        for transform, needs in transforms([h, g]):
            if needs != act:
                continue
            name = repr(transform)
            assert_finite(transform(g), name)
            assert_finite(transform(Batch.from_data_list([g, h])), name)


def poisoned(value=float('nan'), field='edge_attr', row=9, act='sine:30.0'):
    g = graph_of((2, 4, 1), [0.5, -0.25, 1.0], act)             # 8 + 4 edges, 7 nodes
    t = getattr(g, field).clone()
    t[row, 0] = value
    setattr(g, field, t)
    return g


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
def test_every_transform_refuses_a_non_finite_graph_naming_it(value):
    # Row 6: WeightNoise spread one NaN to 16 values (the spread of its layer).
    clean = graph_of((2, 4, 1), [0.5, -0.25, 1.0], 'sine:30.0')
    for transform, act in transforms([clean]):
        if isinstance(transform, T.LabelSmoothing):
            continue                    # reads the label only (tested below)
        name = type(transform).__name__
        bad = poisoned(value, act=act)
        with pytest.raises(ValueError, match=rf'^{name}: edge_attr \(weights\) holds 1 NaN or Inf value\(s\), '
                                             r'the first in weight matrix 1 \(row 9\)'):
            transform(bad)
        batch = Batch.from_data_list([graph_of((2, 4, 1), [0.5], act), poisoned(value, 'x', 3, act)])
        with pytest.raises(ValueError, match=rf'^{name}: graph 1: x \(biases\) holds 1 NaN or Inf value\(s\), '
                                             r'the first in neuron layer 1 \(row 3\)'):
            transform(batch)


def test_per_graph_fallback_and_apply_refuse_too():
    mixed = Batch.from_data_list([graph_of((2, 3, 1), [1.0], 'sine:30.0'), poisoned()])
    with pytest.raises(ValueError, match=r'^WeightNoise: graph 1: edge_attr \(weights\) holds 1 NaN'):
        T.WeightNoise(0.1)(mixed)
    noise = T.WeightNoise(0.1)
    bad = poisoned()
    with pytest.raises(ValueError, match=r'^WeightNoise: edge_attr \(weights\) holds 1 NaN'):
        noise.apply(bad, noise.sample(bad))


def test_mixup_pool_refuses_a_non_finite_partner_naming_it():
    clean = [graph_of((2, 4, 1), [0.5, -0.25], 'sine:30.0') for _ in range(3)]
    with pytest.raises(ValueError, match=r'^WeightMixUp: source item 2: x \(biases\) holds 1 NaN or Inf '
                                         r'value\(s\), the first in neuron layer 2 \(row 6\)'):
        T.WeightMixUp(clean[:2] + [poisoned(float('inf'), 'x', 6)], num_classes=3)
    soft = clean[1].clone()
    soft.y = torch.tensor([[0.5, float('nan'), 0.5]])
    with pytest.raises(ValueError, match=r'^WeightMixUp: source item 1: the soft label is not finite'):
        T.WeightMixUp([clean[0], soft], num_classes=3)
    with pytest.raises(ValueError, match=r'^WeightMixUp: the soft label is not finite'):
        T.WeightMixUp(clean, num_classes=3)(soft)


def test_label_smoothing_refuses_a_non_finite_soft_label():
    batch = Batch.from_data_list([graph_of((2, 3, 1), [1.0], 'sine:30.0') for _ in range(3)])
    batch.y = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.inf, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match=r'^LabelSmoothing: the soft label of graph 1 is not finite'):
        T.LabelSmoothing(0.1, 3)(batch)


@pytest.mark.parametrize('make, message', [
    (lambda: T.WeightNoise(math.inf), 'WeightNoise: std must be >= 0 and finite'),
    (lambda: T.InputScaling(0.5, math.inf), r'InputScaling: need 0 < low <= high < inf'),
    (lambda: T.RandomPositiveScaling(0.5, math.inf), r'RandomPositiveScaling: need 0 < low <= high < inf'),
    (lambda: T.InputRotation(math.inf), 'InputRotation: degrees must be a finite number'),
    (lambda: T.InputRotation((0, math.nan)), r'InputRotation: degrees range \(0.0, nan\) must be finite'),
    (lambda: T.InputRotation(30, axis=(0, 0, math.inf)), 'InputRotation: axis must be a non-zero 3-vector'),
    (lambda: T.InputTranslation([(0, 1), (-math.inf, 0)]), r'InputTranslation: max_shift\[1\] range'),
    (lambda: T.SirenBiasShift(math.inf), 'SirenBiasShift: k_max must be a non-negative integer'),
    (lambda: T.SirenBiasShift(math.nan), 'SirenBiasShift: k_max must be a non-negative integer'),
    (lambda: T.WeightMixUp([poisoned(0.0)], alpha=math.inf), 'WeightMixUp: alpha must be positive and finite'),
    (lambda: T.SelfAlignMixUp(alpha=math.inf), 'SelfAlignMixUp: alpha must be positive and finite'),
    (lambda: T.SelfAlignMixUp(noise=math.inf), 'SelfAlignMixUp: noise must be finite'),
])
def test_settings_that_would_make_nan_are_refused(make, message):
    # e.g. an infinite noise std on a layer of equal weights (spread 0) is 0 * inf = NaN
    with pytest.raises(ValueError, match=f'^{message}'):
        make()


def test_a_chain_screens_once_and_still_refuses_what_changed_in_between(monkeypatch):
    """In a Compose chain the next transform receives the previous one's
    output tensors, finite by construction: it skips the screen. A tensor
    changed in place since (its version moves) or a new one is screened again."""
    from nngraph.transforms import _base
    g = graph_of((2, 4, 1), [0.5, -1.0, 2.0], 'sine:30.0')
    screens = []            # one entry per screen that really summed the tensors
    real = _base._screened
    monkeypatch.setattr(_base, '_screened', lambda ea, x: real(ea, x) or screens.append(1))
    chain = Compose([T.RandomSignFlip(0.5), T.RandomNeuronPermutation(), T.WeightDropout(0.1)])
    out = chain(g)
    assert len(screens) == 1                     # the first transform's screen only
    T.WeightNoise(0.01)(out)
    assert len(screens) == 1                     # out came from a screened transform, unchanged
    out.edge_attr[3, 0] = float('nan')           # in place, after the transform returned it
    with pytest.raises(ValueError, match=r'WeightNoise: .*edge_attr'):
        T.WeightNoise(0.01)(out)
    fresh = graph_of((2, 4, 1), [0.5, -1.0, 2.0], 'sine:30.0')
    fresh.x = fresh.x.clone()
    fresh.x[2, 0] = float('inf')
    with pytest.raises(ValueError, match=r'RandomSignFlip: .*x \(biases\)'):
        chain(fresh)
