"""Graphs/s of building parameter graphs, against per-edge Python builds, in one run.

    python benchmarks/conversion.py [--seconds 2]

Networks are 2-32-32-1 SIRENs (the INR size of the seed paper). Measured on
one core (``torch.set_num_threads(1)``):

* ``from_weights``: the library's fast path, from weight and bias tensors;
* ``from_checkpoint``: from an in-memory state dict (key parsing, shape
  chaining, validation included) and from ``.pt`` files on disk;
* ``per_edge``: what a first attempt does: a Python loop over every weight,
  appending source, target and value to lists, then one ``Data``;
* ``networkx``: a ``networkx.DiGraph`` built edge by edge, then PyG's
  ``from_networkx``.

The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import networkx as nx
import torch
from torch_geometric.data import Data
from torch_geometric.utils import from_networkx

import nngraph as ng
from nngraph.activations import Sine

SIZES = (2, 32, 32, 1)


def siren_states(n: int):
    torch.manual_seed(0)
    states = []
    for _ in range(n):
        model = torch.nn.Sequential(torch.nn.Linear(2, 32), Sine(30.0), torch.nn.Linear(32, 32),
                                    Sine(30.0), torch.nn.Linear(32, 1))
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return states


def per_edge_build(weights, biases, activation):
    """The naive baseline: one Python step per weight."""
    src, dst, attr, bias, layer = [], [], [], [0.0] * weights[0].shape[1], [0] * weights[0].shape[1]
    offset = 0
    for l, (w, b) in enumerate(zip(weights, biases)):
        d_out, d_in = w.shape
        for i in range(d_out):
            for j in range(d_in):
                src.append(offset + j)
                dst.append(offset + d_in + i)
                attr.append(float(w[i, j]))
            bias.append(float(b[i]))
            layer.append(l + 1)
        offset += d_in
    return Data(x=torch.tensor(bias).unsqueeze(-1), edge_index=torch.tensor([src, dst]),
                edge_attr=torch.tensor(attr).unsqueeze(-1), layer=torch.tensor(layer),
                layer_sizes=SIZES, activation=activation)


def networkx_build(weights, biases, activation):
    """The networkx route: a DiGraph edge by edge, then PyG's converter."""
    g = nx.DiGraph()
    offset = 0
    for j in range(weights[0].shape[1]):
        g.add_node(j, bias=0.0, layer=0)
    for l, (w, b) in enumerate(zip(weights, biases)):
        d_out, d_in = w.shape
        for i in range(d_out):
            g.add_node(offset + d_in + i, bias=float(b[i]), layer=l + 1)
        for i in range(d_out):
            for j in range(d_in):
                g.add_edge(offset + j, offset + d_in + i, weight=float(w[i, j]))
        offset += d_in
    data = from_networkx(g, group_node_attrs=['bias'], group_edge_attrs=['weight'])
    data.activation = activation
    return data


def rate(fn, items, seconds: float) -> float:
    """Graphs/s of ``fn`` over ``items``, cycling until ``seconds`` have passed."""
    for item in items[:50]:  # warm-up: caches, allocator
        fn(item)
    n, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        n += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=2.0, help='time per measurement')
    args = parser.parse_args()
    torch.set_num_threads(1)

    states = siren_states(256)
    chains = [([s['0.weight'], s['2.weight'], s['4.weight']], [s['0.bias'], s['2.bias'], s['4.bias']])
              for s in states]
    act = 'sine:30.0'

    # The baselines must build the same graph as the library.
    fast = ng.from_weights(*chains[0], activation=act)
    # networkx lists edges by source node; sorting by (target, source) is canonical order.
    for build in (per_edge_build, networkx_build):
        slow = build(*chains[0], act)
        order = torch.argsort(slow.edge_index[1] * slow.num_nodes + slow.edge_index[0])
        assert torch.equal(slow.edge_index[:, order], fast.edge_index), build.__name__
        assert torch.equal(slow.edge_attr[order].float(), fast.edge_attr), build.__name__
        assert torch.equal(slow.x.float(), fast.x), build.__name__

    figures = {}
    figures['from_weights'] = rate(lambda c: ng.from_weights(*c, activation=act), chains, args.seconds)
    figures['from_checkpoint_dict'] = rate(lambda s: ng.from_checkpoint(s, act), states, args.seconds)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, s in enumerate(states[:64]):
            paths.append(os.path.join(folder, f'inr{i}.pt'))
            torch.save(s, paths[-1])
        figures['from_checkpoint_file'] = rate(lambda p: ng.from_checkpoint(p, act), paths, args.seconds)
    figures['per_edge'] = rate(lambda c: per_edge_build(*c, act), chains[:16], args.seconds)
    figures['networkx'] = rate(lambda c: networkx_build(*c, act), chains[:16], args.seconds)
    figures['from_weights_vs_per_edge'] = figures['from_weights'] / figures['per_edge']
    figures['from_checkpoint_vs_per_edge'] = figures['from_checkpoint_dict'] / figures['per_edge']
    figures['from_weights_vs_networkx'] = figures['from_weights'] / figures['networkx']

    print(f'parameter graphs of {"-".join(map(str, SIZES))} SIRENs, one core, '
          f'torch {torch.__version__}, {platform.processor() or platform.machine()}')
    for key in ('from_weights', 'from_checkpoint_dict', 'from_checkpoint_file', 'per_edge', 'networkx'):
        print(f'  {key:<24s} {figures[key]:>12,.0f} graphs/s')
    for key in ('from_weights_vs_per_edge', 'from_checkpoint_vs_per_edge', 'from_weights_vs_networkx'):
        print(f'  {key:<28s} {figures[key]:>8.0f}x')
    print(json.dumps({'benchmark': 'conversion', 'layer_sizes': SIZES, 'threads': 1,
                      **{k: round(v, 1) for k, v in figures.items()}}))


if __name__ == '__main__':
    main()
