"""One process or several (``torchrun``, DistributedDataParallel): the
process group, reductions, and evaluation shards."""
from __future__ import annotations

import os
from typing import List, Sequence

import torch
import torch.distributed as dist

__all__ = ['Distributed', 'shard']


class Distributed:
    """Process-group state from ``torchrun``'s environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``); a single process when they are absent.
    gloo on CPU, nccl on GPU."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        use_cuda = device == 'cuda' or (device == 'auto' and torch.cuda.is_available())
        if device == 'cuda' and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        self.device = torch.device(f'cuda:{self.local_rank}' if use_cuda else 'cpu')
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group('nccl' if use_cuda else 'gloo')

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: Sequence[float]) -> List[float]:
        """Sums numbers over all processes."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def gather(self, t: "torch.Tensor") -> "torch.Tensor":
        """The CPU tensors ``t`` of all processes, concatenated in rank order
        (``t`` itself on one process): evaluation metrics that need every
        prediction (Kendall's tau) read the whole split."""
        if not self.enabled:
            return t
        parts: List = [None] * self.world
        dist.all_gather_object(parts, t.cpu())
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def shard(dataset, dist_: Distributed):
    """This process's share of an evaluation split (every ``world``-th graph)."""
    # Evaluation shards without padding (DistributedSampler would repeat
    # samples), so reduced sums are exact.
    if not dist_.enabled:
        return dataset
    return torch.utils.data.Subset(dataset, list(range(dist_.rank, len(dataset), dist_.world)))
