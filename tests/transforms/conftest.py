"""Shared fixtures of the transform tests: random networks as graphs, float32
function comparison, and the two checks every transform must pass (input
graph unchanged; batch path equals per-graph path under the same draws)."""
from __future__ import annotations

import math
import random
from types import SimpleNamespace
from typing import Sequence, Tuple

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from nngraph.graph import forward, from_weights
from nngraph.activations import per_layer, get
from nngraph.transforms._base import select_graph

# float32 has eps ~1.2e-7; a few hundred ulps of slack covers re-ordered sums
# through a handful of layers (sine w0 = 30 amplifies phase errors by w0).
F32_TOL = 300 * torch.finfo(torch.float32).eps


def make_graph(sizes: Sequence[int], activation='sine:30.0', dtype=torch.float32, y=None) -> Data:
    """A random network of these widths, initialised like a trained one would
    look: SIREN init for sine layers, He-like otherwise, non-zero biases."""
    sizes = tuple(sizes)
    acts = per_layer(activation, len(sizes) - 1)
    weights, biases = [], []
    for l in range(len(sizes) - 1):
        d = sizes[l]
        # the activation this layer's output feeds (the last layer: the one before)
        act = get(acts[max(0, min(l, len(acts) - 2))])
        if act.name == 'sine':
            bound = 1.0 / d if l == 0 else math.sqrt(6.0 / d) / act.param
        else:
            bound = math.sqrt(6.0 / d)
        weights.append(torch.empty(sizes[l + 1], d, dtype=dtype).uniform_(-bound, bound))
        biases.append(torch.empty(sizes[l + 1], dtype=dtype).uniform_(-bound, bound))
    if y is None:
        y = torch.tensor([int(torch.randint(0, 3, ()))])
    return from_weights(weights, biases, activation, y=y)


def random_sizes(rng: random.Random, d_in: Tuple[int, ...] = (1, 2, 3)) -> Tuple[int, ...]:
    """A random MLP architecture: 1-3 hidden layers of width 1-9."""
    hidden = [rng.randint(1, 9) for _ in range(rng.randint(1, 3))]
    return (rng.choice(d_in), *hidden, rng.randint(1, 3))


def inputs(d: int, n: int = 64) -> Tensor:
    """Points in [-1, 1]^d, the domain INRs are fitted on."""
    return torch.rand(n, d) * 2 - 1


def assert_close_f32(actual: Tensor, expected: Tensor) -> None:
    scale = 1.0 + float(expected.abs().max())
    err = float((actual - expected).abs().max())
    assert err <= F32_TOL * scale, f'max error {err:.3g} > tolerance {F32_TOL * scale:.3g}'


def assert_same_function(g: Data, h: Data, x: Tensor = None) -> None:
    x = inputs(g.layer_sizes[0]) if x is None else x
    assert_close_f32(forward(h, x), forward(g, x))


def snapshot(g: Data) -> dict:
    return {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in g.to_dict().items()}


def assert_unchanged(g: Data, snap: dict) -> None:
    now = g.to_dict()
    assert set(now) == set(snap)
    for k, v in snap.items():
        if isinstance(v, Tensor):
            assert torch.equal(now[k], v), f'transform modified the input graph field {k!r}'
        else:
            assert now[k] == v, f'transform modified the input graph field {k!r}'


def assert_batch_matches_graphs(transform, batch: Batch) -> None:
    """Same draws: the vectorised batch path equals the per-graph path, graph by graph."""
    params = transform.sample(batch)
    out = transform.apply(batch, params).to_data_list()
    for i, g in enumerate(batch.to_data_list()):
        single = transform.apply(g, select_graph(params, i))
        assert torch.equal(out[i].edge_attr, single.edge_attr), f'graph {i}: weights differ'
        assert torch.equal(out[i].x, single.x), f'graph {i}: biases differ'


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def kit() -> SimpleNamespace:
    return SimpleNamespace(
        make_graph=make_graph, random_sizes=random_sizes, inputs=inputs,
        assert_close_f32=assert_close_f32, assert_same_function=assert_same_function,
        snapshot=snapshot, assert_unchanged=assert_unchanged,
        assert_batch_matches_graphs=assert_batch_matches_graphs, tol=F32_TOL)
