"""A sparse coder whose latents are sharded across the ranks of a process group (for dictionaries too large for one
device), computing exactly what one ``SparseCoder`` computes.

Shard ``i`` of ``s`` owns latents ``[i * F/s, (i + 1) * F/s)``: those columns of ``W_enc``, entries of ``b_enc`` and
``threshold``, rows of ``W_dec``; ``b_dec`` is replicated. Every rank of the group sees the same rows ``x``.

- TopK: each shard's top ``k`` per token, an all-gather of the candidates (values and global indices), the global
  top ``k`` of those (exactly the unsharded choice: any latent of the global top ``k`` is in its shard's top ``k``);
  each shard decodes the chosen latents it owns, and the partial reconstructions are summed (all-reduce).
- BatchTopK: each shard's ``n * k`` largest pre-activations, all-gathered; the batch's ``n * k``-th largest is the
  threshold every shard keeps its own entries above.
- JumpReLU / ReLU: local activations and decode, then the all-reduce; their penalties are sums over latents, so
  the shards' partial sums are all-reduced too.
- AuxK: the same cross-shard top-k over the dead latents (the dead mask is the whole dictionary's, identical on
  every rank, so that every shard takes the same branch).

Autograd crosses the collectives with two functions (as in Megatron-LM's tensor parallelism): the sum of the partial
reconstructions is an all-reduce forward and the identity backward (the loss after it is computed identically on
every shard), and the encoder input is the identity forward and an all-reduce backward (each shard's encoder
contributes its part of ``b_dec``'s gradient). The decoder-norm constraint is per row, hence per shard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .coder import _EPS, DecoderConstraint, SparseCoder, _JumpReLU, _Step
from .config import CoderConfig
from .sparse import Pattern, SelectedPreacts, SparseDecode

SHARD_DIMS = {"W_enc": 1, "b_enc": 0, "W_dec": 0, "threshold": 0}
"""The latent dimension of each sharded tensor; the others (``b_dec``, ``batch_threshold``) are replicated."""


@dataclass(frozen=True)
class ShardGroup:
    """The ranks that hold one copy of every dictionary between them, in shard order."""

    group: Any
    """The ``torch.distributed`` process group of ``ranks``."""
    ranks: tuple[int, ...]
    index: int
    """This rank's shard."""

    @property
    def size(self) -> int:
        return len(self.ranks)


class _SumOverShards(torch.autograd.Function):
    """All-reduce (sum) forward; identity backward (what follows is replicated on every shard)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        out = tensor.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        return grad, None


class _SumGradsOverShards(torch.autograd.Function):
    """Identity forward; all-reduce (sum) of the gradient backward (each shard adds its own part)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def _all_gather(tensor: torch.Tensor, group: Any, dim: int) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def gather_rows(tensor: torch.Tensor, shards: ShardGroup) -> torch.Tensor:
    """Every rank's rows of the group, in shard order (each rank of a shard group reads its own rows)."""
    return _all_gather(tensor, shards.group, dim=0)


@dataclass
class ShardedOutput:
    reconstruction: torch.Tensor
    """[n, d_out], the whole reconstruction (identical on every shard)."""
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    counts: torch.Tensor
    """float32 [F/s]: tokens each of this shard's latents fired on."""


class ShardedCoder(DecoderConstraint, nn.Module):
    """One shard of a ``SparseCoder`` (parameters in the same order, so optimiser states map one to one)."""

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    threshold: nn.Parameter
    batch_threshold: torch.Tensor

    def __init__(self, full: SparseCoder, shards: ShardGroup, device: torch.device | str = "cpu") -> None:
        super().__init__()
        cfg = full.cfg
        if cfg.d_sae % shards.size:
            raise ValueError(f"ShardedCoder: the dictionary size {cfg.d_sae} is not divisible by the {shards.size} "
                             f"latent shards")
        self.cfg: CoderConfig = cfg
        self.shards = shards
        self.width = cfg.d_sae // shards.size
        self.offset = shards.index * self.width
        for name, tensor in full.named_parameters():
            self.register_parameter(name, nn.Parameter(self.shard(name, tensor.detach()).to(device).clone()))
        for name, buffer in full.named_buffers():
            self.register_buffer(name, buffer.detach().to(device).clone())

    # -- moving whole tensors in and out --------------------------------------------------------------------------
    def shard(self, name: str, full: torch.Tensor) -> torch.Tensor:
        """This shard's part of a whole tensor named like a parameter (or an optimiser state of one)."""
        dim = SHARD_DIMS.get(name)
        if dim is None or full.ndim == 0:
            return full
        return full.narrow(dim, self.offset, self.width)

    def gather(self, name: str, part: torch.Tensor) -> torch.Tensor | None:
        """The whole tensor on the CPU of the group's first rank (None on the others); one shard at a time goes
        through device memory, so that a dictionary larger than a device can be gathered. Every rank calls it."""
        dim = SHARD_DIMS.get(name)
        if dim is None or part.ndim == 0:
            return part.detach().cpu() if self.shards.index == 0 else None
        first = self.shards.ranks[0]
        part = part.detach().contiguous()
        if self.shards.index != 0:
            dist.send(part, dst=first, group=self.shards.group)
            return None
        pieces = [part.to("cpu", copy=True)]
        buffer = torch.empty_like(part)
        for source in self.shards.ranks[1:]:
            dist.recv(buffer, src=source, group=self.shards.group)
            pieces.append(buffer.to("cpu", copy=True))  # the buffer is reused (and .cpu() of a CPU tensor is it)
        return torch.cat(pieces, dim=dim)

    def full_state(self) -> dict[str, torch.Tensor] | None:
        """The whole coder's ``state_dict`` on the group's first rank (None on the others)."""
        state = {name: self.gather(name, tensor) for name, tensor in self.state_dict().items()}
        return None if self.shards.index else {k: v for k, v in state.items() if v is not None}

    def load_full_state_(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in self.state_dict().items():
                tensor.copy_(self.shard(name, state[name]))

    def to_full(self) -> SparseCoder | None:
        """The whole coder on the CPU of the group's first rank (None on the others)."""
        state = self.full_state()
        if state is None:
            return None
        coder = SparseCoder(self.cfg)
        coder.load_state_dict(state)
        return coder

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """The whole coder's gradient L2 norm (shards summed, replicated tensors counted once)."""
        local = torch.zeros((), dtype=torch.float64, device=self.W_enc.device)
        replicated = torch.zeros_like(local)
        for name, param in self.named_parameters():
            if param.grad is None:
                continue
            squares = param.grad.to(torch.float64).pow(2).sum()
            if name in SHARD_DIMS:
                local += squares
            else:
                replicated += squares
        dist.all_reduce(local, op=dist.ReduceOp.SUM, group=self.shards.group)
        return (local + replicated).sqrt()

    # -- training forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, dead_mask: torch.Tensor | None = None,
                variance: float | None = None) -> ShardedOutput:
        """Like ``SparseCoder.forward`` (the same rows ``x`` on every shard); ``dead_mask`` is the whole
        dictionary's [F]."""
        cfg = self.cfg
        if x.ndim != 2 or x.shape[1] != cfg.d_in:
            raise ValueError(f"ShardedCoder: x must be [n, d_in={cfg.d_in}], got {list(x.shape)}")
        if target is None:
            if cfg.is_transcoder:
                raise ValueError("ShardedCoder: a transcoder (d_out set) needs the target activations")
            target = x
        if dead_mask is not None and dead_mask.shape != (cfg.d_sae,):
            raise ValueError(f"ShardedCoder: dead_mask must be [{cfg.d_sae}], got {list(dead_mask.shape)}")
        target = target.to(self.W_enc.dtype)
        x = x.to(self.W_enc.dtype)
        # The encoder input: each shard's encoder adds its part of b_dec's gradient through it.
        xc = _SumGradsOverShards.apply(x if cfg.is_transcoder else x - self.b_dec, self.shards.group)
        if cfg.architecture in ("topk", "batchtopk"):
            return self._forward_topk_family(xc, target, dead_mask, variance)
        return self._forward_dense(xc, target, dead_mask, variance)

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return _SumOverShards.apply(tensor, self.shards.group)

    def _own(self, chosen: torch.Tensor, n: int) -> Pattern:
        """The pattern of this shard's latents among ``chosen`` [n, k] global indices sorted along each row."""
        own = (chosen >= self.offset) & (chosen < self.offset + self.width)
        rows, slots = own.nonzero(as_tuple=True)
        return Pattern.from_rows_cols(rows, chosen[rows, slots] - self.offset, n, self.width)

    def _global_topk(self, pre: torch.Tensor, k: int) -> Pattern:
        """This shard's part of the per-row top ``k`` of the whole dictionary's ``pre``."""
        local = pre.topk(min(k, self.width), dim=1, sorted=False)
        values = _all_gather(local.values, self.shards.group, dim=1)
        indices = _all_gather(local.indices + self.offset, self.shards.group, dim=1)
        best = values.topk(k, dim=1, sorted=False).indices
        return self._own(indices.gather(1, best).sort(dim=1).values, pre.shape[0])

    def _batch_topk(self, pre: torch.Tensor) -> tuple[Pattern, torch.Tensor | None]:
        """This shard's part of the batch's ``n * k`` largest positive pre-activations, and the smallest kept."""
        n = pre.shape[0]
        assert self.cfg.k is not None
        flat = pre.reshape(-1)
        local = flat.topk(min(n * self.cfg.k, flat.numel()), sorted=False).values
        candidates = _all_gather(local, self.shards.group, dim=0)
        top = candidates.topk(min(n * self.cfg.k, candidates.numel()), sorted=False).values
        kept = top[top > 0]
        if kept.numel() == 0:
            return Pattern.from_rows_cols(flat.new_zeros(0, dtype=torch.int64), flat.new_zeros(0, dtype=torch.int64),
                                          n, self.width), None
        smallest = kept.min()
        rows, cols = (pre >= smallest).nonzero(as_tuple=True)
        return Pattern.from_rows_cols(rows, cols, n, self.width), smallest

    def _forward_topk_family(self, xc: torch.Tensor, target: torch.Tensor, dead_mask: torch.Tensor | None,
                             variance: float | None) -> ShardedOutput:
        cfg = self.cfg
        assert cfg.k is not None
        with torch.no_grad():  # gradients come from SelectedPreacts' sparse backward
            pre = torch.addmm(self.b_enc, xc, self.W_enc)
            if cfg.architecture == "topk":
                pattern = self._global_topk(pre, cfg.k)
            else:
                pattern, smallest = self._batch_topk(pre)
                if smallest is not None:
                    self._update_batch_threshold(smallest)
        values = torch.relu(SelectedPreacts.apply(xc, self.W_enc, self.b_enc, None, pre, pattern))
        reconstruction = self._sum(SparseDecode.apply(values, self.W_dec, pattern)) + self.b_dec
        losses = SparseCoder._reconstruction_losses(reconstruction, target, variance)
        loss = losses["fvu"]
        if dead_mask is not None and cfg.aux_k_coefficient > 0 and bool(dead_mask.any()):
            losses["auxk"] = self._auxk(xc, pre, target - reconstruction.detach(), dead_mask)
            loss = loss + cfg.aux_k_coefficient * losses["auxk"]
        active = values.detach() > 0
        counts = torch.bincount(pattern.cols[active], minlength=self.width).to(torch.float32)
        return ShardedOutput(reconstruction=reconstruction, loss=loss, losses=losses, counts=counts)

    def _auxk(self, xc: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor,
              dead_mask: torch.Tensor) -> torch.Tensor:
        dead = int(dead_mask.sum())
        k_aux = min(self.cfg.aux_k_in_force, dead)
        own_dead = dead_mask[self.offset:self.offset + self.width].to(torch.bool)
        with torch.no_grad():
            pattern = self._global_topk(pre.masked_fill(~own_dead, -math.inf), k_aux)
        values = torch.relu(SelectedPreacts.apply(xc, self.W_enc, self.b_enc, None, pre, pattern))
        residual_hat = self._sum(SparseDecode.apply(values, self.W_dec, pattern))
        spread = (residual - residual.mean(0)).pow(2).sum().clamp_min(_EPS)
        return min(1.0, dead / k_aux) * (residual_hat - residual).pow(2).sum() / spread

    @torch.no_grad()
    def _update_batch_threshold(self, smallest: torch.Tensor) -> None:
        smallest = smallest.to(self.batch_threshold)
        if float(self.batch_threshold) < 0:
            self.batch_threshold.copy_(smallest)
        else:
            m = self.cfg.batchtopk_threshold_momentum
            self.batch_threshold.mul_(m).add_((1 - m) * smallest)

    def _forward_dense(self, xc: torch.Tensor, target: torch.Tensor, dead_mask: torch.Tensor | None,
                       variance: float | None) -> ShardedOutput:
        cfg = self.cfg
        pre = torch.addmm(self.b_enc, xc, self.W_enc)
        if cfg.architecture == "jumprelu":
            latents = _JumpReLU.apply(torch.relu(pre), self.threshold, cfg.jumprelu_bandwidth)
            penalty = _Step.apply(pre, self.threshold, cfg.jumprelu_bandwidth).sum(1).mean()
            penalty_name = "l0_penalty"
        else:
            latents = torch.relu(pre)
            penalty = (latents * self.W_dec.norm(dim=1)).sum(1).mean()
            penalty_name = "l1"
        reconstruction = self._sum(latents @ self.W_dec) + self.b_dec
        losses = {penalty_name: self._sum(penalty)}
        losses.update(SparseCoder._reconstruction_losses(reconstruction, target, variance))
        loss = losses["mse"] + cfg.penalty * losses[penalty_name]
        if dead_mask is not None and cfg.dead_preact_coefficient > 0 and bool(dead_mask.any()):
            own_dead = dead_mask[self.offset:self.offset + self.width].to(torch.bool)
            threshold = self.threshold.detach()[own_dead] if cfg.architecture == "jumprelu" else 0.0
            gap = torch.relu(threshold - pre[:, own_dead])
            losses["dead_preact"] = self._sum((gap * self.W_dec.detach()[own_dead].norm(dim=1)).sum(1).mean())
            loss = loss + cfg.dead_preact_coefficient * losses["dead_preact"]
        counts = (latents.detach() != 0).sum(0).to(torch.float32)
        return ShardedOutput(reconstruction=reconstruction, loss=loss, losses=losses, counts=counts)
