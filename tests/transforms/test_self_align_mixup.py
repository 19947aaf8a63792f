"""SelfAlignMixUp: the aligned copy undoes its own permutation and signs, so
only the noise is mixed in; labels are kept; the batch path agrees."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from nngraph.graph import from_weights
from nngraph.matching import distance
from nngraph.transforms import SelfAlignMixUp


def graph(sizes=(2, 16, 16, 1), activation='sine:30.0', seed=0, y=1):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(sizes[l + 1], sizes[l], generator=gen) / sizes[l] ** 0.5
               for l in range(len(sizes) - 1)]
    biases = [torch.randn(sizes[l + 1], generator=gen) * 0.1 for l in range(len(sizes) - 1)]
    return from_weights(weights, biases, activation, y=torch.tensor([y]))


def norm(g):
    return float((g.edge_attr.pow(2).sum() + g.x.pow(2).sum()).sqrt())


@pytest.mark.parametrize('activation', ['sine:30.0', 'tanh', 'relu'])
def test_without_noise_the_sample_comes_back(activation):
    torch.manual_seed(0)
    for seed in range(4):
        g = graph(activation=activation, seed=seed)
        before = (g.edge_attr.clone(), g.x.clone(), g.y.clone())
        out = SelfAlignMixUp(alpha=0.5, noise=0.0)(g)
        torch.testing.assert_close(out.edge_attr, g.edge_attr, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.x, g.x, rtol=0, atol=1e-6)
        assert torch.equal(out.y, g.y)
        assert torch.equal(g.edge_attr, before[0]) and torch.equal(g.x, before[1])


def test_noise_is_mixed_in_aligned():
    # aligned, the result stays within (1 - lam) * noise of the sample; mixing
    # the permuted, sign-flipped copy unaligned would land ~ (1 - lam) * |theta| away
    torch.manual_seed(1)
    g = graph(seed=3)
    lam, noise = 0.5, 0.05
    out = SelfAlignMixUp(noise=noise, lam=lam)(g)
    moved = float(distance(out, g)) / norm(g)
    assert 0 < moved < 2 * (1 - lam) * noise


def test_signs_follow_the_activation():
    assert SelfAlignMixUp()._use_signs('sine:30.0', 3)
    assert not SelfAlignMixUp()._use_signs('relu', 3)
    assert not SelfAlignMixUp(signs=False)._use_signs('tanh', 3)
    with pytest.raises(ValueError, match="SelfAlignMixUp.*relu"):
        SelfAlignMixUp(signs=True)(graph(activation='relu'))


def test_batch_path():
    graphs = [graph(seed=s, y=s % 3) for s in range(6)]
    batch = Batch.from_data_list(graphs)
    before = batch.edge_attr.clone()
    torch.manual_seed(0)
    out = SelfAlignMixUp(noise=0.0)(batch)
    assert isinstance(out, Batch) and torch.equal(batch.edge_attr, before)
    torch.testing.assert_close(out.edge_attr, batch.edge_attr, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.x, batch.x, rtol=0, atol=1e-6)
    assert torch.equal(out.y, batch.y)
    # with noise each graph moves by about as much as on the per-sample path
    out = SelfAlignMixUp(noise=0.05, lam=0.5)(batch)
    moved = distance(out, batch) / torch.stack([torch.tensor(norm(g)) for g in graphs])
    assert ((moved > 0) & (moved < 0.05)).all()
    with pytest.raises(ValueError, match='architecture'):
        SelfAlignMixUp()(Batch.from_data_list([graph(), graph((2, 5, 1))]))


def test_refusals_and_repr():
    with pytest.raises(ValueError, match='noise'):
        SelfAlignMixUp(noise=-1)
    with pytest.raises(ValueError, match='alpha'):
        SelfAlignMixUp(alpha=-1)
    with pytest.raises(ValueError, match='lam'):
        SelfAlignMixUp(lam=2)
    assert repr(SelfAlignMixUp(0.2, 0.1)) == 'SelfAlignMixUp(alpha=0.2, noise=0.1, signs=None)'
