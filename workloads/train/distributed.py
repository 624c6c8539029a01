"""torch.distributed as the gang engine launches it: env:// rendezvous (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE),
gloo on CPU and nccl on GPU, and a timeout on every collective so that a dead peer fails this rank (exit code 1,
the gang restarts) instead of hanging it.

One :class:`Collective` wraps the few operations the trainer needs; with a world of one it does nothing, so the same
code trains on a laptop.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..sae.sharded import ShardGroup


class Collective:
    def __init__(self, rank: int, world_size: int, device: torch.device, timeout_s: float) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device
        self.active = world_size > 1
        self.timeout = timedelta(seconds=timeout_s)
        if self.active and not dist.is_initialized():
            # torch's C++ store resolves names with libc; resolving here also honours resolvers only Python sees
            # (interp-local's cluster hosts file) and fails early, clearly, when the name does not resolve.
            if os.environ.get("MASTER_ADDR"):
                os.environ["MASTER_ADDR"] = socket.gethostbyname(os.environ["MASTER_ADDR"])
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                    timeout=timedelta(seconds=timeout_s))

    def sum_(self, tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
        """All-reduce (sum) in place, over the gang or ``group``."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        return tensor

    def latent_mesh(self, shards: int) -> tuple[ShardGroup, Any]:
        """This rank's shard group (``shards`` consecutive ranks, which hold one copy of every dictionary between
        them) and its replica group (the ranks holding the same shard, one per shard group, data parallel)."""
        world = self.world_size
        mine: ShardGroup | None = None
        replicas: Any = None
        # Every rank creates every group, in the same order.
        for first in range(0, world, shards):
            ranks = tuple(range(first, first + shards))
            group = dist.new_group(list(ranks), timeout=self.timeout)
            if self.rank in ranks:
                mine = ShardGroup(group=group, ranks=ranks, index=self.rank - first)
        for index in range(shards):
            ranks = tuple(range(index, world, shards))
            group = dist.new_group(list(ranks), timeout=self.timeout)
            if self.rank in ranks:
                replicas = group
        assert mine is not None
        return mine, replicas

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if self.active:
            dist.broadcast(tensor, src=src)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.max_(value).item() > 0)

    def barrier(self) -> None:
        if self.active:
            # A barrier is an all-reduce of one element: it obeys the group's timeout on every backend.
            self.sum_(torch.zeros(1, device=self.device))

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
