"""Objectives of the loops (cross-entropy with hard or soft labels, SimCLR's
NT-Xent) and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['soft_cross_entropy', 'hard_labels', 'nt_xent', 'warmup_cosine']


def soft_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    r"""Cross-entropy with hard labels (long ``[B]``) or soft labels (float
    ``[B, K]``, e.g. from MixUp): :math:`-\frac1B\sum_i \sum_k y_{ik}\log p_{ik}`.
    For one-hot ``y`` both forms are equal."""
    if y.dtype in (torch.long, torch.int32, torch.int64):
        return F.cross_entropy(logits, y.view(-1))
    y = y.view(logits.shape)
    return -(y * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def hard_labels(y: Tensor) -> Tensor:
    """Class indices ``[B]`` of hard or soft labels."""
    return y.view(-1) if not y.is_floating_point() else y.view(y.size(0), -1).argmax(-1)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    r"""SimCLR's NT-Xent loss of two views ``[B, P]``: for each of the
    :math:`2B` projections the positive is the other view of the same graph,
    the :math:`2B - 2` others are negatives,
    :math:`\ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{j \neq i}\exp(s_{ij}/\tau)}`
    with cosine similarities :math:`s`."""
    B = z1.size(0)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float('-inf'))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(sim, target)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup from ~0 to 1 over ``warmup_steps``, then
    cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor
