"""Small seeded networks shared by the tests."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nngraph import activations as A

# Every registered activation with a parameter where it takes one.
ACTIVATIONS = ('relu', 'leaky_relu:0.2', 'tanh', 'sigmoid', 'gelu', 'silu', 'sine:30.0', 'identity')


class SineLayer(nn.Module):
    """A SIREN layer as the original SIREN and NFN code write it: ``Linear`` + ``omega_0``."""

    def __init__(self, d_in: int, d_out: int, omega_0: float = 30.0) -> None:
        super().__init__()
        self.omega_0 = omega_0
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


def mlp(sizes: Sequence[int], activation: str = 'relu', *, seed: int = 0,
        dtype: torch.dtype = torch.float32, last: str = 'identity') -> nn.Sequential:
    """``nn.Sequential`` of Linear layers with ``activation`` between them."""
    gen = torch.Generator().manual_seed(seed)
    mods = []
    for l in range(len(sizes) - 1):
        lin = nn.Linear(sizes[l], sizes[l + 1], dtype=dtype)
        with torch.no_grad():
            bound = 1.0 / sizes[l] ** 0.5
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
        mods.append(lin)
        act = activation if l + 2 < len(sizes) else last
        if act != 'identity':
            mods.append(A.get(act).module())
    return nn.Sequential(*mods)


def random_weights(sizes: Sequence[int], *, seed: int = 0, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(sizes[l + 1], sizes[l], generator=gen, dtype=dtype) / sizes[l] ** 0.5
               for l in range(len(sizes) - 1)]
    biases = [torch.randn(sizes[l + 1], generator=gen, dtype=dtype) * 0.1 for l in range(len(sizes) - 1)]
    return weights, biases


def inputs(n: int, d: int, *, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1
