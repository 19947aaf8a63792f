"""AlignedMLPEncoder: aligning to a fixed reference makes the flat MLP
invariant to hidden-neuron permutations (and to sign flips with signs on),
the reference travels in the state dict, and bad inputs fail clearly."""
import pytest
import torch
from torch_geometric.data import Batch

import nngraph
from nngraph.matching import distance
from nngraph.models import AlignedMLPEncoder, FlatMLPEncoder
from nngraph.transforms import RandomNeuronPermutation, RandomSignFlip

SIZES = (2, 8, 8, 1)


def graphs(n, seed=0, activation='sine:30.0'):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        W = [torch.randn(b, a, generator=gen) / a ** 0.5 for a, b in zip(SIZES[:-1], SIZES[1:])]
        b = [torch.randn(d, generator=gen) * 0.5 for d in SIZES[1:]]
        out.append(nngraph.from_weights(W, b, activation))
    return out


def fitted(gs, signs=False):
    torch.manual_seed(0)
    enc = AlignedMLPEncoder(SIZES, hidden=32, layers=2, signs=signs).eval()
    enc.fit_normalization(Batch.from_data_list(gs))
    return enc


def test_reference_is_the_first_graph_and_aligns_to_itself():
    gs = graphs(10)
    enc = fitted(gs)
    assert torch.equal(enc.reference_edge_attr, gs[0].edge_attr) and torch.equal(enc.reference_x, gs[0].x)
    batch = Batch.from_data_list(gs)
    aligned = enc.align(batch)
    assert torch.equal(aligned.edge_attr[:gs[0].num_edges], gs[0].edge_attr)
    # Aligned networks are never farther from the reference than they were.
    ref = Batch.from_data_list([gs[0]] * 10)
    assert (distance(ref, aligned) <= distance(ref, batch) + 1e-5).all()
    assert (distance(ref, aligned) < distance(ref, batch) - 1e-3).sum() >= 5


@pytest.mark.parametrize('signs', [False, True])
def test_output_is_invariant_to_hidden_symmetries(signs):
    gs = graphs(16, seed=1)
    enc = fitted(gs[:8], signs=signs)
    torch.manual_seed(3)
    moved = [RandomSignFlip()(RandomNeuronPermutation()(g)) if signs else RandomNeuronPermutation()(g)
             for g in gs]
    a, b = Batch.from_data_list(gs), Batch.from_data_list(moved)
    x = torch.rand(32, 2) * 2 - 1     # the moved networks are the same functions
    torch.testing.assert_close(nngraph.forward(b, x), nngraph.forward(a, x), rtol=1e-4, atol=1e-4)
    assert (a.edge_attr - b.edge_attr).abs().max() > 0.1
    torch.testing.assert_close(enc(b), enc(a), rtol=1e-5, atol=1e-5)
    # The same MLP without alignment sees the difference.
    flat = FlatMLPEncoder(SIZES, hidden=32, layers=2).eval()
    flat.load_state_dict({k: v for k, v in enc.state_dict().items() if not k.startswith(('reference', 'has_'))})
    assert (flat(a) - flat(b)).abs().max() > 1e-3


def test_sign_flips_need_signs_on():
    gs = graphs(8, seed=2)
    enc = fitted(gs[:4], signs=False)
    torch.manual_seed(4)
    flipped = Batch.from_data_list([RandomSignFlip(p=0.5)(g) for g in gs])
    assert (enc(flipped) - enc(Batch.from_data_list(gs))).abs().max() > 1e-3


def test_signs_with_an_activation_that_is_not_odd_is_refused():
    enc = AlignedMLPEncoder(SIZES, hidden=8, signs=True)
    with pytest.raises(ValueError, match=r"model\.align_signs: true.*odd activation.*'relu'"):
        enc.fit_normalization(Batch.from_data_list(graphs(3, activation='relu')))
    # Without signs a relu network aligns (permutations are valid for every activation).
    AlignedMLPEncoder(SIZES, hidden=8).fit_normalization(Batch.from_data_list(graphs(3, activation='relu')))


def test_reference_is_saved_in_the_state_dict():
    gs = graphs(6, seed=5)
    enc = fitted(gs, signs=True)
    fresh = AlignedMLPEncoder(SIZES, hidden=32, layers=2, signs=True).eval()
    with pytest.raises(RuntimeError, match='no reference network yet'):
        fresh(Batch.from_data_list(gs))
    fresh.load_state_dict(enc.state_dict())
    batch = Batch.from_data_list(graphs(4, seed=6))
    torch.testing.assert_close(fresh(batch), enc(batch))


def test_other_architecture_is_refused():
    enc = fitted(graphs(3))
    g = nngraph.from_weights([torch.randn(4, 2), torch.randn(1, 4)], [torch.zeros(4), torch.zeros(1)], 'sine:30.0')
    with pytest.raises(ValueError, match=r'built for layer sizes \(2, 8, 8, 1\), got a graph with \(2, 4, 1\)'):
        enc(Batch.from_data_list([g]))


def test_cache_gives_the_uncached_alignment_and_misses_changed_networks():
    gs = graphs(24, seed=3)
    enc = fitted(gs, signs=True)
    plain = AlignedMLPEncoder(SIZES, hidden=32, layers=2, signs=True, cache_size=0).eval()
    plain.load_state_dict(enc.state_dict())
    full = plain.flatten(Batch.from_data_list(gs))
    assert enc._keys.numel() == 24        # fit_normalization aligned (and cached) all of them
    enc.clear_cache()
    # Batches of other compositions: every network's alignment is the uncached one, exactly.
    first = enc.flatten(Batch.from_data_list(gs[:10]))
    assert torch.equal(first, full[:10]) and enc._keys.numel() == 10
    mixed = enc.flatten(Batch.from_data_list(gs[5:20]))            # 5 hits, 10 misses
    assert torch.equal(mixed, full[5:20]) and enc._keys.numel() == 20
    again = enc.flatten(Batch.from_data_list(gs[:20][::-1]))       # all hits
    assert torch.equal(again, full[:20].flip(0))
    # A changed network (an augmentation) is not served from the cache.
    perm = RandomNeuronPermutation()(gs[3])
    out = enc.flatten(Batch.from_data_list([perm, gs[4]]))
    assert torch.equal(out, plain.flatten(Batch.from_data_list([perm, gs[4]])))
    assert not torch.equal(perm.edge_attr, gs[3].edge_attr) and enc._keys.numel() == 21
    # A new reference empties it.
    enc.set_reference(gs[1])
    assert enc._keys.numel() == 0


def test_cache_is_bounded():
    gs = graphs(12, seed=4)
    enc = fitted(gs)
    enc.cache_size = 5
    enc.clear_cache()
    enc.flatten(Batch.from_data_list(gs))
    assert enc._keys.numel() == 5


# Issue 19, row 15: the key was a float64 product whose rounding depended on
# the batch's size and the CPU's BLAS kernels (22 keys for 20 networks on AVX2).
def test_cache_key_is_a_function_of_the_network_bytes_alone():
    gs = graphs(33, seed=5)
    enc = AlignedMLPEncoder(SIZES, hidden=8, layers=1)
    raw = FlatMLPEncoder(SIZES).flatten(Batch.from_data_list(gs))            # [33, P] float32
    alone = torch.cat([enc.cache_keys(raw[i:i + 1]) for i in range(33)])
    for size in (2, 7, 16, 33):                                               # other batch sizes
        in_batches = torch.cat([enc.cache_keys(part) for part in raw.split(size)])
        assert torch.equal(in_batches, alone)
    assert alone.unique().numel() == 33                                       # distinct networks
    # One bit of one weight changes the key: the lowest mantissa bit, and the sign.
    for bit in (0, 31):
        flipped = raw[3:4].clone()
        flipped.view(torch.int32)[0, 40] ^= (1 << bit) if bit < 31 else -2 ** 31
        assert not torch.equal(flipped, raw[3:4])
        assert enc.cache_keys(flipped) != alone[3]
    # 0.0 and -0.0 are equal values with different bytes: different keys (a
    # miss and a second alignment, never a wrong hit).
    zero, negative = raw[:1].clone(), raw[:1].clone()
    zero[0, 0], negative[0, 0] = 0.0, -0.0
    assert enc.cache_keys(zero) != enc.cache_keys(negative)


def test_non_finite_networks_are_refused_naming_them():
    gs = graphs(4, seed=6)
    ea = gs[2].edge_attr.clone()
    ea[1, 0] = float('nan')
    bad = gs[2].clone()
    bad.edge_attr = ea
    enc = fitted(gs)
    with pytest.raises(ValueError, match=r'^AlignedMLPEncoder: graph 1: edge_attr \(weights\) holds 1 NaN'):
        enc(Batch.from_data_list([gs[0], bad]))
    with pytest.raises(ValueError, match=r'^AlignedMLPEncoder.set_reference: edge_attr \(weights\) holds 1 NaN'):
        enc.set_reference(bad)
    assert torch.equal(enc.reference_edge_attr, gs[0].edge_attr)            # the reference is kept
