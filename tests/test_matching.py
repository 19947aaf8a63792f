"""Weight matching: planted permutations (and signs) come back exactly, the
function of ``other`` is kept, and alignment never moves ``other`` away."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import (forward, from_weights, layer_views, permute_hidden, rescale_hidden,
                           stacked_layer_views, with_layers)
from nngraph.matching import align, apply_matching, distance, match, match_layers

ARCHS = [(2, 16, 1), (2, 16, 16, 1), (3, 12, 20, 8, 2)]


def graph(sizes, activation='relu', seed=0, bias_std=0.1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(sizes[l + 1], sizes[l], generator=gen, dtype=dtype) / sizes[l] ** 0.5
               for l in range(len(sizes) - 1)]
    biases = [torch.randn(sizes[l + 1], generator=gen, dtype=dtype) * bias_std
              for l in range(len(sizes) - 1)]
    return from_weights(weights, biases, activation)


def planted(g, seed, signs=False, noise=0.0):
    """``g`` with random hidden permutations (and signs) and a little noise."""
    gen = torch.Generator().manual_seed(seed)
    sizes = g.layer_sizes
    perms = [torch.randperm(d, generator=gen) for d in sizes[1:-1]]
    flips = [torch.randint(0, 2, (d,), generator=gen) * 2 - 1 for d in sizes[1:-1]]
    w, b = permute_hidden(*layer_views(g), perms)
    if signs:
        w, b = rescale_hidden(w, b, flips)
    out = with_layers(g, w, b)
    out.edge_attr = out.edge_attr + noise * torch.randn(out.edge_attr.shape, generator=gen)
    out.x = out.x + noise * torch.randn(out.x.shape, generator=gen)
    out.x[:sizes[0]] = 0   # inputs carry no bias
    return out, perms, flips


def inputs(d, n=64, seed=1, dtype=torch.float32):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def unchanged(g):
    return g.edge_attr.clone(), g.x.clone()


@pytest.mark.parametrize('sizes', ARCHS)
@pytest.mark.parametrize('activation', ['relu', 'sine:30.0'])
@pytest.mark.parametrize('seed', range(4))
def test_recovers_planted_permutation(sizes, activation, seed):
    ref = graph(sizes, activation, seed)
    other, perms, _ = planted(ref, seed + 100, noise=1e-4)
    aligned, m = align(ref, other, return_perms=True)
    for h, p in enumerate(perms):
        assert torch.equal(m.perms[h], torch.argsort(p)), f'hidden layer {h}'
    assert m.signs is None
    # what is left is the planted noise (its norm is ~1e-4 * sqrt(#params))
    assert float(distance(ref, aligned)) < 1e-4 * (ref.num_edges + ref.num_nodes) ** 0.5 * 1.5


@pytest.mark.parametrize('sizes', ARCHS)
@pytest.mark.parametrize('activation', ['tanh', 'sine:30.0'])
@pytest.mark.parametrize('seed', range(4))
def test_recovers_planted_permutation_and_sign(sizes, activation, seed):
    ref = graph(sizes, activation, seed)
    other, perms, flips = planted(ref, seed + 200, signs=True, noise=1e-4)
    aligned, m = align(ref, other, signs=True, return_perms=True)
    for h, (p, s) in enumerate(zip(perms, flips)):
        inv = torch.argsort(p)
        assert torch.equal(m.perms[h], inv), f'hidden layer {h}'
        # aligned neuron i = sign[i] * other neuron inv[i] = sign[i] * s[inv[i]] * ref neuron i
        assert torch.equal(m.signs[h], s[inv].to(m.signs[h].dtype)), f'hidden layer {h}'
    assert float(distance(ref, aligned)) < 1e-4 * (ref.num_edges + ref.num_nodes) ** 0.5 * 1.5


def test_permutation_only_cannot_undo_signs():
    ref = graph((2, 16, 16, 1), 'tanh', 3)
    other, _, _ = planted(ref, 4, signs=True)
    assert float(distance(ref, align(ref, other))) > 1e-2
    assert float(distance(ref, align(ref, other, signs=True))) < 1e-5


@pytest.mark.parametrize('activation,signs', [('relu', False), ('leaky_relu:0.1', False),
                                              ('tanh', True), ('sine:30.0', True), ('sine:30.0', False)])
@pytest.mark.parametrize('sizes', ARCHS)
def test_align_keeps_function_and_never_moves_away(activation, signs, sizes):
    # float64, so that sin(30 z) of a reordered sum is equal to ~1e-12, not ~1e-4
    x = inputs(sizes[0], dtype=torch.float64)
    for seed in range(3):
        ref = graph(sizes, activation, seed, dtype=torch.float64)
        other = graph(sizes, activation, seed + 50, dtype=torch.float64)
        before = unchanged(other), unchanged(ref)
        aligned = align(ref, other, signs=signs)
        assert aligned.edge_attr.dtype == torch.float64
        torch.testing.assert_close(forward(aligned, x), forward(other, x), rtol=1e-10, atol=1e-10)
        assert float(distance(ref, aligned)) <= float(distance(ref, other)) + 1e-9
        # the guarantee holds after any number of sweeps, not only at convergence
        assert float(distance(ref, align(ref, other, signs=signs, max_iter=1))) <= \
            float(distance(ref, other)) + 1e-9
        for g, (ea, nx) in ((other, before[0]), (ref, before[1])):
            assert torch.equal(g.edge_attr, ea) and torch.equal(g.x, nx)


def test_alignment_lowers_distance_of_unrelated_networks():
    # weight matching should find a clearly better order than the arbitrary one
    gaps = []
    for seed in range(5):
        ref, other = graph((2, 32, 32, 1), 'relu', seed), graph((2, 32, 32, 1), 'relu', seed + 9)
        gaps.append(float(distance(ref, other)) - float(distance(ref, align(ref, other))))
    assert min(gaps) > 0


def test_signs_never_worse_than_identity_and_usually_better_than_perms_only():
    wins = 0
    for seed in range(6):
        ref, other = graph((2, 24, 24, 1), 'tanh', seed), graph((2, 24, 24, 1), 'tanh', seed + 30)
        d_perm = float(distance(ref, align(ref, other)))
        d_sign = float(distance(ref, align(ref, other, signs=True)))
        assert d_sign <= float(distance(ref, other)) + 1e-5
        wins += d_sign < d_perm
    assert wins >= 4


def test_random_order_recovers_planted_and_is_reproducible():
    ref = graph((2, 10, 12, 14, 1), 'relu', 0)
    other, perms, _ = planted(ref, 5)
    m1 = match(ref, other, order='random', generator=torch.Generator().manual_seed(0))
    m2 = match(ref, other, order='random', generator=torch.Generator().manual_seed(0))
    for h, p in enumerate(perms):
        assert torch.equal(m1.perms[h], torch.argsort(p))
        assert torch.equal(m1.perms[h], m2.perms[h])


def test_batch_equals_pairs():
    sizes = (2, 12, 12, 1)
    refs = [graph(sizes, 'sine:30.0', s) for s in range(5)]
    others = [graph(sizes, 'sine:30.0', s + 40) for s in range(5)]
    others[2] = planted(refs[2], 7, signs=True)[0]
    ref_b, other_b = Batch.from_data_list(refs), Batch.from_data_list(others)
    for signs in (False, True):
        aligned_b, mb = align(ref_b, other_b, signs=signs, return_perms=True)
        assert isinstance(aligned_b, Batch) and aligned_b.num_graphs == 5
        wb, bb = stacked_layer_views(aligned_b)
        for i in range(5):
            aligned, m = align(refs[i], others[i], signs=signs, return_perms=True)
            for h in range(2):
                assert torch.equal(mb.perms[h][i], m.perms[h])
                if signs:
                    assert torch.equal(mb.signs[h][i], m.signs[h])
            w, b = layer_views(aligned)
            for l in range(3):
                assert torch.equal(wb[l][i], w[l]) and torch.equal(bb[l][i], b[l])
        torch.testing.assert_close(distance(ref_b, aligned_b),
                                   torch.stack([distance(r, align(r, o, signs=signs))
                                                for r, o in zip(refs, others)]))
    # one reference shared by the whole batch
    shared = align(refs[0], other_b)
    for i in range(5):
        torch.testing.assert_close(stacked_layer_views(shared)[0][1][i],
                                   layer_views(align(refs[0], others[i]))[0][1])


def test_match_layers_on_views_and_apply():
    ref = graph((2, 8, 8, 1), 'relu', 1)
    other, perms, _ = planted(ref, 2)
    m = match_layers(*layer_views(ref), *layer_views(other))
    w, b = apply_matching(*layer_views(other), m)
    for wr, wa in zip(layer_views(ref)[0], w):
        torch.testing.assert_close(wa, wr)


def test_multichannel_features_are_matched_together():
    ref = graph((2, 10, 10, 1), 'relu', 0)
    ref.edge_attr = torch.cat([ref.edge_attr, ref.edge_attr.pow(2)], dim=1)
    ref.x = torch.cat([ref.x, -ref.x], dim=1)
    other, perms, _ = planted(ref, 3)
    m = match(ref, other)
    for h, p in enumerate(perms):
        assert torch.equal(m.perms[h], torch.argsort(p))


def test_no_hidden_layer_and_max_iter():
    ref, other = graph((3, 2), 'relu', 0), graph((3, 2), 'relu', 1)
    aligned, m = align(ref, other, return_perms=True)
    assert m.perms == [] and torch.equal(aligned.edge_attr, other.edge_attr)
    big_ref, big_other = graph((2, 16, 16, 16, 1), 'relu', 0), graph((2, 16, 16, 16, 1), 'relu', 1)
    assert match(big_ref, big_other, max_iter=1).sweeps == 1


def test_refusals():
    relu = graph((2, 8, 1), 'relu')
    with pytest.raises(ValueError, match="relu"):
        align(relu, graph((2, 8, 1), 'relu', 1), signs=True)
    with pytest.raises(ValueError, match=r'\(2, 8, 1\).*\(2, 9, 1\)'):
        align(relu, graph((2, 9, 1), 'relu'))
    with pytest.raises(ValueError, match=r'\(2, 8, 1\).*\(2, 8, 8, 1\)'):
        align(relu, graph((2, 8, 8, 1), 'relu'))
    with pytest.raises(ValueError, match='order'):
        align(relu, relu, order='backwards')
    with pytest.raises(ValueError, match='max_iter'):
        align(relu, relu, max_iter=0)
    with pytest.raises(TypeError, match='Data or Batch'):
        align(relu, layer_views(relu))
    with pytest.raises(TypeError, match='Batch reference'):
        align(Batch.from_data_list([relu]), relu)
    with pytest.raises(ValueError, match='cannot be paired'):
        align(Batch.from_data_list([relu, relu]), Batch.from_data_list([relu] * 3))
    mixed = Batch.from_data_list([relu, graph((2, 9, 1), 'relu')])
    with pytest.raises(ValueError, match='one architecture'):
        align(relu, mixed)


def test_aligned_parameters_carry_gradients_to_other():
    # the matching itself is discrete; applying it is a gather that autograd follows
    ref = graph((2, 8, 8, 1), 'tanh', 0)
    other, _, flips = planted(ref, 1, signs=True)
    other.edge_attr = other.edge_attr.clone().requires_grad_()
    aligned = align(ref, other, signs=True)
    aligned.edge_attr.sum().backward()
    grad = other.edge_attr.grad
    assert grad is not None and torch.equal(grad.abs(), torch.ones_like(grad))


def poisoned(g, field, row, value=float('nan')):
    t = getattr(g, field).clone()
    t[row, 0] = value
    out = g.clone()
    setattr(out, field, t)
    return out


# Issue 19, row 6: a NaN reached scipy's linear_sum_assignment, which raised
# "matrix contains invalid numeric entries" naming no graph.
def test_non_finite_networks_are_refused_naming_them():
    sizes = (2, 5, 4, 1)
    ref = graph(sizes, seed=0)
    others = [graph(sizes, seed=s) for s in (1, 2, 3)]
    bad = poisoned(others[1], 'edge_attr', 12)
    with pytest.raises(ValueError, match=r'^align: other: graph 1: edge_attr \(weights\) holds 1 NaN or Inf '
                                         r'value\(s\), the first in weight matrix 1 \(row 12\)'):
        align(ref, Batch.from_data_list([others[0], bad, others[2]]))
    with pytest.raises(ValueError, match=r'^align: reference: x \(biases\) .* neuron layer 1 \(row 4\)'):
        align(poisoned(ref, 'x', 4, float('inf')), others[0], signs=False)
    with pytest.raises(ValueError, match=r'^align: other: graph 2: x \(biases\) .* neuron layer 2 \(row 7\)'):
        match(ref, Batch.from_data_list(others[:2] + [poisoned(others[2], 'x', 7)]))
    with pytest.raises(ValueError, match=r'^distance: b: edge_attr \(weights\) holds 1 NaN'):
        distance(ref, bad)
    with pytest.raises(ValueError, match=r'^distance: a: graph 1: edge_attr \(weights\) holds 1 NaN'):
        distance(Batch.from_data_list([others[0], bad]), Batch.from_data_list(others[:2]))
