"""One SAE being trained (a *member* of the job): its coder, its Adam, its input scaling, its dead-latent counters
and the sums its next metric record is made of. All members of a job train from the same batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from interp_operator.api.saetrainingjob import SAESpec, TrainingSpec

from ..dump.config import ConfigError
from ..sae import CoderConfig, CoderOutput, SparseCoder
from ..sae.sharded import ShardedCoder, ShardGroup
from ..store.manifest import StoreManifest


def input_scale(manifest: StoreManifest, hook: str, normalize: bool, field_name: str) -> float:
    """The factor that gives the hook's activations E‖x‖² = d (the store's rms norm is sqrt(E‖x‖²)); 1 if off."""
    info = manifest.hook(hook)
    if not normalize:
        return 1.0
    rms = info.stats.rms_norm
    if not math.isfinite(rms) or rms <= 0:
        raise ConfigError(f"{field_name}: the store's activations at {hook!r} have rms norm {rms}; they cannot be "
                          f"normalised (set training.normalizeActivations: false, or dump them again)")
    return math.sqrt(info.d) / rms


@dataclass
class Sums:
    """What a metric record is computed from, summed over the interval's tokens (and, at a record, the ranks)."""

    squared_error: float = 0.0
    variance: float = 0.0
    """Σ‖y − ȳ‖² with ȳ each batch's mean on its rank."""
    active: float = 0.0
    tokens: float = 0.0
    fires: torch.Tensor | None = None
    """Tokens each latent fired on."""

    def to_dict(self) -> dict[str, Any]:
        return {"squaredError": self.squared_error, "variance": self.variance, "active": self.active,
                "tokens": self.tokens}


@dataclass
class Member:
    spec: SAESpec
    coder: SparseCoder | ShardedCoder
    """A whole coder, or this rank's shard of its latents (``training.latentSharding``)."""
    optimizer: torch.optim.Adam
    peak_lr: float
    hook: str
    target_hook: str | None
    scale: float
    target_scale: float
    d_sae: int
    since_fired: torch.Tensor
    """Tokens since each latent last fired (float64: exact up to 2**53 tokens)."""
    d_out: int
    sums: Sums = field(default_factory=Sums)
    skipped: int = 0
    skipped_since_checkpoint: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def dead_mask(self, window: int) -> torch.Tensor:
        return self.since_fired >= window

    @property
    def sharded(self) -> bool:
        return isinstance(self.coder, ShardedCoder)

    def gradients(self) -> list[torch.Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.coder.parameters()]

    def reduced(self) -> list[torch.Tensor]:
        """The tensors the whole gang averages after each step: gradients (of a whole coder; a shard's go to the
        ranks holding the same shard, ``gradients``), and float buffers the forward updates (a BatchTopK threshold
        estimate, say), which would otherwise drift apart across ranks."""
        buffers = [b for b in self.coder.buffers() if b.is_floating_point()]
        return buffers if self.sharded else self.gradients() + buffers

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """Tensors (whole, whatever the sharding) and JSON of this member for a checkpoint. A sharded member's
        tensors are gathered: every rank of the shard group holding rank 0 calls this, and only the group's
        first rank gets them (None elsewhere)."""
        coder = self.coder
        if isinstance(coder, ShardedCoder):
            if coder.shards.ranks[0] != 0:
                return None  # a replica of what rank 0's group holds
            whole = coder.full_state()
            adam: dict[str, torch.Tensor | None] = {}
            for index, (name, param) in enumerate(coder.named_parameters()):
                for key, value in sorted(self.optimizer.state.get(param, {}).items()):
                    adam[f"adam.{index}.{key}"] = coder.gather(name, torch.as_tensor(value))
            if whole is None:
                return None
            tensors = {f"coder.{k}": v for k, v in whole.items()}
            tensors |= {k: v for k, v in adam.items() if v is not None}
            optimizer = self.optimizer.state_dict()
        else:
            tensors = {f"coder.{k}": v for k, v in coder.state_dict().items()}
            optimizer = self.optimizer.state_dict()
            for index, values in optimizer["state"].items():
                for key, value in values.items():
                    tensors[f"adam.{index}.{key}"] = torch.as_tensor(value)
        tensors["since_fired"] = self.since_fired
        if self.sums.fires is not None:
            tensors["sums.fires"] = self.sums.fires
        scalars = {"paramGroups": optimizer["param_groups"], "skipped": self.skipped, "sums": self.sums.to_dict()}
        return tensors, scalars

    def restore(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        """From a checkpoint's whole tensors (written at any world size, sharded or not)."""
        coder = self.coder
        coder_state = {k.removeprefix("coder."): v for k, v in tensors.items() if k.startswith("coder.")}
        names = [name for name, _ in coder.named_parameters()]
        if isinstance(coder, ShardedCoder):
            coder.load_full_state_(coder_state)
        else:
            coder.load_state_dict(coder_state)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("adam."):
                _, index, name = key.split(".", 2)
                if isinstance(coder, ShardedCoder):
                    value = coder.shard(names[int(index)], value).clone()
                state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": scalars["paramGroups"]})
        self.since_fired.copy_(tensors["since_fired"])
        sums = scalars["sums"]
        fires = tensors.get("sums.fires")
        self.sums = Sums(squared_error=sums["squaredError"], variance=sums["variance"], active=sums["active"],
                         tokens=sums["tokens"], fires=None if fires is None else fires.to(self.since_fired.device))
        self.skipped = int(scalars["skipped"])


def coder_config(sae: SAESpec, d_in: int, d_out: int | None, training: TrainingSpec) -> CoderConfig:
    d_sae = sae.dict_size or (sae.expansion_factor or 1) * d_in
    where = f"saes[{sae.name}]"
    if sae.k is not None and sae.k >= d_sae:
        raise ConfigError(f"{where}.k: {sae.k} must be smaller than the dictionary size {d_sae}")
    return CoderConfig(architecture=sae.architecture, d_in=d_in, d_sae=d_sae, d_out=d_out, k=sae.k,
                       sparsity_coefficient=sae.sparsity_coefficient, aux_k_coefficient=sae.aux_k_coefficient,
                       dead_tokens_threshold=training.dead_window_tokens)


def build_member(sae: SAESpec, manifest: StoreManifest, training: TrainingSpec, device: torch.device,
                 sample: dict[str, torch.Tensor], shards: ShardGroup | None = None) -> Member:
    """A freshly initialised member (seeded by the SAE's seed; b_dec from ``sample``, the stream's first rows).

    With ``shards``, this rank's shard of the latents: the whole coder is initialised on the CPU (the same on
    every rank, whatever the devices) and sliced, so that it never has to fit on one device."""
    hooks = {h.name: h for h in manifest.hooks}
    for field_name, hook in (("hookPoint", sae.hook_point), ("targetHookPoint", sae.target_hook_point)):
        if hook is not None and hook not in hooks:
            raise ConfigError(f"saes[{sae.name}].{field_name}: {hook!r} is not in the activation store "
                              f"(it holds {', '.join(sorted(hooks))})")
    target = sae.target_hook_point
    scale = input_scale(manifest, sae.hook_point, training.normalize_activations, f"saes[{sae.name}].hookPoint")
    target_scale = scale if target is None else input_scale(manifest, target, training.normalize_activations,
                                                            f"saes[{sae.name}].targetHookPoint")
    d_in = hooks[sae.hook_point].d
    d_out = hooks[target].d if target is not None else None
    cfg = coder_config(sae, d_in, d_out, training)
    first = (sample[target] * target_scale) if target is not None else sample[sae.hook_point] * scale
    coder: SparseCoder | ShardedCoder
    if shards is None:
        generator = torch.Generator(device=device).manual_seed(sae.seed)
        coder = SparseCoder(cfg, device=device, dtype=torch.float32, generator=generator)
        coder.init_b_dec_(first.to(device))
    else:
        if cfg.d_sae % shards.size:
            raise ConfigError(f"saes[{sae.name}]: the dictionary size {cfg.d_sae} is not divisible by the "
                              f"{shards.size} latent shards (training.latentSharding); choose a dictSize that is")
        whole = SparseCoder(cfg, dtype=torch.float32, generator=torch.Generator().manual_seed(sae.seed))
        whole.init_b_dec_(first.cpu())
        coder = ShardedCoder(whole, shards, device)
    lr = sae.learning_rate or training.learning_rate
    optimizer = torch.optim.Adam(coder.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    return Member(spec=sae, coder=coder, optimizer=optimizer, peak_lr=lr, hook=sae.hook_point, target_hook=target,
                  scale=scale, target_scale=target_scale, d_sae=cfg.d_sae, d_out=d_out or d_in,
                  since_fired=torch.zeros(cfg.d_sae, dtype=torch.float64, device=device))


def fire_counts(out: CoderOutput, d_sae: int) -> torch.Tensor:
    """Tokens each latent fired on in this batch ([d_sae], float32)."""
    indices, acts = out.latent_indices, out.latent_acts
    if indices is None:  # dense activations [n, d_sae]
        return (acts != 0).sum(0).to(torch.float32)
    active = acts != 0
    return torch.bincount(indices[active].reshape(-1), minlength=d_sae).to(torch.float32)
