"""The training loop: every SAE of the job from one pass over the activation stream, data parallel across ranks.

Each step, every rank reads its own slice of the step's rows (``StoreReader``), runs every member's forward and
backward, and the gang sums one flat buffer per step: the gradients, the float buffers, each latent's fire count and
the metric sums of every member, plus a flag per member saying whether its batch or loss was not finite on some
rank. A flagged member skips the step everywhere (nothing non-finite reaches the weights); the others average the
gradients, clip, and step. Replicas therefore stay identical, and rank 0 alone writes checkpoints and exports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import torch

from interp_operator.logs import get_logger

from ..dump.config import ConfigError
from ..profiling import StepProfiler
from ..progress import ProgressReporter, status_server_from_env
from ..sae import load_sae
from ..sae.sharded import ShardedCoder, ShardGroup, gather_rows
from ..store.files import write_json_atomic
from ..store.reader import ActivationStore, Position, StoreReader
from .checkpoint import Checkpoint, load_latest, save_checkpoint, step_dir, steps
from .config import TrainConfig
from .distributed import Collective
from .downstream import downstream_losses
from .exports import CHECK_ROWS, export_all
from .members import Member, build_member, fire_counts
from .metrics import CURVES_FILE, MetricsLog, PrometheusMetrics, plot_curves
from .onthefly import ModelStream, open_stream
from .schedule import lr_factor

FINGERPRINT = "train-config.json"
SAMPLE_ROWS = 4096
"""Rows of the stream's start that initialise every b_dec (the same on any world size)."""
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_log = get_logger("interp_workloads.train")


class TrainingDiverged(RuntimeError):
    """Non-finite steps passed the threshold again after a roll-back: retrying cannot help (exit code 3)."""


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config, self.spec, self.root = config, config.spec, config.output
        self.training = config.spec.training
        local = config.local_rank
        self.device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
        self.batch = self.training.batch_size_tokens
        self.total_steps = max(1, self.training.tokens // self.batch)
        self.step = 0
        self.position = Position()
        self.stage = "start"
        self.rolled_back = False
        self.last_checkpoint: dict[str, Any] | None = None
        self.latest: dict[str, dict[str, Any]] = {}
        self.members: list[Member] = []
        self.reporter = ProgressReporter(unit="tok")
        self.prometheus = PrometheusMetrics()
        self.log = MetricsLog(self.root, enabled=config.rank == 0)
        self.collective: Collective | None = None
        self.shards: ShardGroup | None = None
        self.replicas: Any = None
        """With latent sharding: the ranks holding the same shard as this one (its gradients are averaged there)."""
        self._checkpoint_clock = time.monotonic()

    @property
    def tokens(self) -> int:
        return self.step * self.batch

    # -- entry point -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        config = self.config
        server = status_server_from_env(self.report, self.prometheus.render)
        profiler = StepProfiler(self.root / "profiles", name=f"rank{config.rank}")
        self.collective = Collective(config.rank, config.world_size, self.device,
                                     self.training.collective_timeout_seconds)
        try:
            if config.latent_shards > 1:
                self.shards, self.replicas = self.collective.latent_mesh(config.latent_shards)
            self.root.mkdir(parents=True, exist_ok=True)
            self._check_fingerprint()
            store = self._open_data()
            self._build(store)
            resumed = self._resume()
            self._agree_on_step()
            self.log.truncate_after(self.step)
            # The bar (and this rank's rate) counts what this process trains: its share of the remaining steps.
            self.reporter.set_total((self.total_steps - self.step) * (self.batch // config.world_size))
            self.stage = "train"
            self._train(store, profiler)
            self.stage = "export"
            whole = self._whole_members()
            if config.rank != 0:
                self.stage = "done"
                return {"rank": config.rank, "stage": "done", "steps": self.step}
            plot_curves(self.log.path, self.root / CURVES_FILE)
            hooks = sorted({m.hook for m in self.members})
            result = export_all(self.root, whole, config, _first_rows(store, hooks, CHECK_ROWS))
            if isinstance(store, ModelStream):
                self.stage = "downstream"
                result["downstream"] = self._downstream(store)
            self.stage = "done"
            return result | {"steps": self.step, "tokens": self.tokens, "resumedFrom": resumed}
        finally:
            profiler.close()
            self.reporter.close()
            if server is not None:
                server.stop()
            self.collective.close()

    # -- set-up ------------------------------------------------------------------------------------------------
    def _check_fingerprint(self) -> None:
        """An output directory holding another job's checkpoints is refused (the fields that differ are named)."""
        assert self.collective is not None
        path = self.root / FINGERPRINT
        mine: dict[str, Any] = {"fingerprint": self.config.fingerprint(), "content": self.config.content()}
        if self.config.rank == 0 and not path.exists():
            if steps(self.root):
                raise ConfigError(f"{self.root} holds checkpoints without {FINGERPRINT}: not this job's; choose "
                                  f"another output or delete them")
            write_json_atomic(path, mine)
        self.collective.barrier()
        theirs = json.loads(path.read_text())
        if theirs.get("fingerprint") != mine["fingerprint"]:
            raise ConfigError(f"{self.root} already holds checkpoints of another training configuration (differs "
                              f"in: {', '.join(_differences(mine['content'], theirs.get('content', {})))}); choose "
                              f"another output or delete that one")

    def _open_data(self) -> ActivationStore | ModelStream:
        config = self.config
        if config.store is not None:
            return ActivationStore(config.store)
        fields = {}
        for sae in self.spec.saes:
            for name, hook in (("hookPoint", sae.hook_point), ("targetHookPoint", sae.target_hook_point)):
                if hook is not None:
                    fields.setdefault(hook, f"saes[{sae.name}].{name}")
        stream = open_stream(config, fields, self.device, self.device)
        stream.describe(SAMPLE_ROWS)
        return stream

    def _build(self, store: ActivationStore | ModelStream) -> None:
        hooks = self._hooks(store)
        first = _first_rows(store, hooks, SAMPLE_ROWS)
        self.members = [build_member(sae, store.manifest, self.training, self.device, first,  # type: ignore[arg-type]
                                     self.shards) for sae in self.spec.saes]
        assert self.collective is not None
        for member in self.members:  # identical anyway (seeded); the broadcast makes it certain across devices
            if member.sharded:
                continue  # initialised on the CPU, the same on every rank; each holds its own part
            for tensor in member.coder.state_dict().values():
                self.collective.broadcast_(tensor)

    def _hooks(self, store: ActivationStore | ModelStream) -> list[str]:
        wanted: list[str] = []
        for sae in self.spec.saes:
            for name, hook in (("hookPoint", sae.hook_point), ("targetHookPoint", sae.target_hook_point)):
                if hook is None:
                    continue
                if hook not in store.hooks:
                    raise ConfigError(f"saes[{sae.name}].{name}: {hook!r} is not in the activation store "
                                      f"{store.root} (it holds {', '.join(store.hooks)})")
                if hook not in wanted:
                    wanted.append(hook)
        if self.batch > store.tokens:
            raise ConfigError(f"training.batchSizeTokens ({self.batch}) exceeds the store's {store.tokens} tokens")
        return wanted

    # -- checkpoints -------------------------------------------------------------------------------------------
    @property
    def _checkpoint_device(self) -> torch.device:
        """Where checkpoints load: whole tensors of a sharded dictionary stay on the CPU, each rank takes its part."""
        return torch.device("cpu") if self.shards is not None else self.device

    def _whole_members(self) -> list[Member]:
        """The members with whole coders on rank 0 (a sharded one gathered onto its CPU); every rank calls this."""
        whole = []
        for member in self.members:
            coder = member.coder
            if isinstance(coder, ShardedCoder):
                gathered = coder.to_full() if coder.shards.ranks[0] == 0 else None
                if gathered is not None:
                    whole.append(dataclasses.replace(member, coder=gathered))
            else:
                whole.append(member)
        return whole

    def _resume(self) -> int | None:
        checkpoint = load_latest(self.root, self._checkpoint_device)
        if checkpoint is None:
            if steps(self.root):
                raise ConfigError(f"{self.root / 'checkpoints'}: no checkpoint verifies (checksums differ); delete "
                                  f"the damaged ones to start over")
            return None
        self._restore(checkpoint)
        _log.info("resumed", step=self.step, tokens=self.tokens, checkpoint=str(checkpoint.path))
        return self.step

    def _agree_on_step(self) -> None:
        """Every rank resumed from the same checkpoint (they read it from the shared output on their own)."""
        assert self.collective is not None
        ours = torch.tensor([float(self.step), -float(self.step)], device=self.device)
        highest, lowest = self.collective.max_(ours).tolist()
        if highest != -lowest:
            raise RuntimeError(f"the ranks resumed from different checkpoints (steps {-lowest:.0f} to {highest:.0f})")

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        for member in self.members:
            if member.name not in checkpoint.tensors:
                raise ConfigError(f"{checkpoint.path}: no state for SAE {member.name!r}")
            member.restore(checkpoint.tensors[member.name], state["members"][member.name])
        self.step = int(state["step"])
        self.position = Position.from_dict(state["position"])
        random.setstate(_tuple(state["rng"]["python"]))
        torch.set_rng_state(checkpoint.tensors["rng"]["torch"].to(torch.uint8))
        self.last_checkpoint = state.get("written")
        self.latest = state.get("latest", {})

    def _checkpoint(self) -> None:
        assert self.collective is not None
        for member in self.members:  # every rank's share of the unfinished metric interval, into rank 0's copy
            self._reduce_sums(member)
        self._checkpoint_clock = time.monotonic()
        written = {"step": self.step, "tokens": self.tokens, "time": datetime.now(UTC).strftime(TIME_FORMAT),
                   "path": str(step_dir(self.root, self.step).relative_to(self.root))}
        states = [member.state() for member in self.members]  # a sharded member's is gathered onto rank 0
        if self.config.rank == 0:
            tensors: dict[str, dict[str, torch.Tensor]] = {"rng": {"torch": torch.get_rng_state()}}
            scalars = {}
            for member, member_state in zip(self.members, states, strict=True):
                assert member_state is not None
                tensors[member.name], scalars[member.name] = member_state
            state = {"step": self.step, "tokens": self.tokens, "position": self.position.to_dict(),
                     "rng": {"python": random.getstate()}, "members": scalars, "written": written,
                     "latest": self.latest, "worldSize": self.config.world_size}
            save_checkpoint(self.root, self.step, state, tensors, keep=self.training.checkpoints_kept)
            self.prometheus.checkpoints.inc()
        else:  # rank 0 holds the gang's sums now
            for member in self.members:
                member.sums.squared_error = member.sums.variance = member.sums.active = member.sums.tokens = 0.0
                member.sums.fires = None
        self.last_checkpoint = written
        for member in self.members:
            member.skipped_since_checkpoint = 0

    def _reduce_sums(self, member: Member) -> None:
        assert self.collective is not None
        sums = member.sums
        fires = sums.fires if sums.fires is not None else torch.zeros(member.d_sae, device=self.device)
        scalars = torch.tensor([sums.squared_error, sums.variance, sums.active, sums.tokens],
                               dtype=torch.float64, device=self.device)
        self.collective.sum_(scalars)
        self.collective.sum_(fires)
        sums.squared_error, sums.variance, sums.active, sums.tokens = (float(v) for v in scalars.tolist())
        sums.fires = fires

    def _roll_back(self) -> None:
        """Too many non-finite steps since the last checkpoint: continue from it, or fail if that happened before."""
        limit = self.training.max_skipped_steps
        if self.rolled_back:
            raise TrainingDiverged(f"more than training.maxSkippedSteps ({limit}) steps with a non-finite batch or "
                                   f"loss again after rolling back to the last checkpoint; the data or the "
                                   f"hyperparameters (learning rate, normalisation) need attention")
        checkpoint = load_latest(self.root, self._checkpoint_device)
        if checkpoint is None:
            raise TrainingDiverged(f"more than training.maxSkippedSteps ({limit}) steps with a non-finite batch or "
                                   f"loss before the first checkpoint; nothing to roll back to")
        _log.warning("too many non-finite steps; rolling back", step=self.step, checkpoint=str(checkpoint.path))
        self._restore(checkpoint)
        self.log.truncate_after(self.step)
        self.rolled_back = True
        for member in self.members:
            member.skipped_since_checkpoint = 0

    # -- the loop ----------------------------------------------------------------------------------------------
    def _train(self, store: ActivationStore | ModelStream, profiler: StepProfiler) -> None:
        for member in self.members:
            member.skipped_since_checkpoint = 0
        while self.step < self.total_steps:
            rolled = False
            for batch_position, activations in self._batches(store):
                profiler.step(self.step)
                bad = self._step(activations)
                self.position = batch_position
                self.step += 1
                self.reporter.update(self.batch // self.config.world_size, step=self.step)
                self.prometheus.step.set(self.step)
                self.prometheus.tokens.set(self.tokens)
                self.prometheus.tokens_per_second.set(self.reporter.rate())
                last = self.step >= self.total_steps
                if self.step % self.training.metrics_interval_steps == 0 or last:
                    self._record()
                if bad and any(m.skipped_since_checkpoint > self.training.max_skipped_steps
                               for m in self.members):
                    self._roll_back()
                    rolled = True
                    break
                if last or self._checkpoint_due():
                    self._checkpoint()
                if last:
                    break
            if not rolled:
                break

    def _batches(self, store: ActivationStore | ModelStream) -> Iterator[tuple[Position, dict[str, torch.Tensor]]]:
        config = self.config
        if isinstance(store, ModelStream):
            yield from store.batches(self.step, self.batch, config.rank, config.world_size)
            return
        reader = StoreReader(store, self._hooks(store), self.batch // config.world_size, rank=config.rank,
                             world_size=config.world_size, start=self.position,
                             shuffle_window=self.training.shuffle_window_tokens, seed=self.training.seed, loop=True,
                             device=self.device, dtype=torch.float32)
        for batch in reader:
            yield batch.position, batch.activations

    def _checkpoint_due(self) -> bool:
        assert self.collective is not None
        if self.step % self.training.checkpoint_interval_steps == 0:
            return True
        minutes = self.training.checkpoint_interval_minutes
        if minutes is None:
            return False
        # Every rank must agree, so rank 0's clock decides.
        return self.collective.any(self.config.rank == 0 and
                                   time.monotonic() - self._checkpoint_clock >= minutes * 60)

    def _step(self, activations: dict[str, torch.Tensor]) -> bool:
        """One optimiser step of every member; True when some member skipped it."""
        assert self.collective is not None
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.training.dtype == "bfloat16")
        scaled: dict[tuple[str, float], torch.Tensor] = {}  # SAEs of one hook (and scale) share their input

        def scale(hook: str, factor: float) -> torch.Tensor:
            if (hook, factor) not in scaled:
                scaled[hook, factor] = activations[hook] * factor
            return scaled[hook, factor]

        inputs = [(scale(m.hook, m.scale), None if m.target_hook is None else scale(m.target_hook, m.target_scale))
                  for m in self.members]
        finite_inputs = {key: bool(torch.isfinite(x).all()) for key, x in scaled.items()}
        variances = self._gang_variances([x if target is None else target for x, target in inputs])
        world = self.config.world_size
        parts: list[torch.Tensor] = []
        shard_parts: list[torch.Tensor] = []
        for member, (x, target), gang_variance in zip(self.members, inputs, variances, strict=True):
            y = x if target is None else target
            member.optimizer.zero_grad(set_to_none=True)
            counts = torch.zeros(member.d_sae, device=self.device)
            squared_error = torch.zeros((), device=self.device)
            coder = member.coder
            if isinstance(coder, ShardedCoder):
                finite, squared_error, counts = self._sharded_forward(member, coder, x, target, gang_variance,
                                                                      autocast)
                shard_parts += [t.reshape(-1).float() for t in member.gradients()]
            else:
                finite = finite_inputs[member.hook, member.scale] and math.isfinite(gang_variance) and (
                    member.target_hook is None or finite_inputs[member.target_hook, member.target_scale])
            if finite and not member.sharded:
                with autocast:
                    out = coder(x, target=target, dead_mask=member.dead_mask(self.training.dead_window_tokens),
                                variance=None if world == 1 else gang_variance / world)
                finite = bool(torch.isfinite(out.loss))
                if finite:
                    out.loss.backward()
                    with torch.no_grad():
                        squared_error = (out.reconstruction.float() - y).pow(2).sum()
                        counts = fire_counts(out, member.d_sae)
            # Each rank adds its share, so that the gang's sum is the whole batch's variance.
            variance = torch.tensor(gang_variance / world if finite else 0.0, device=self.device)
            flag = torch.tensor([0.0 if finite else 1.0, float(x.shape[0])], device=self.device)
            parts += [t.reshape(-1).float() for t in member.reduced()]
            parts += [counts, torch.stack([squared_error.float(), variance.float()]), flag]
        flat = self.collective.sum_(torch.cat(parts))
        shard_flat = self.collective.sum_(torch.cat(shard_parts), self.replicas) if shard_parts else None
        return self._apply(flat, shard_flat)

    def _sharded_forward(self, member: Member, coder: ShardedCoder, x: torch.Tensor, target: torch.Tensor | None,
                         gang_variance: float, autocast: Any) -> tuple[bool, torch.Tensor, torch.Tensor]:
        """Forward and backward of a latent shard on the shard group's rows (each rank's own, gathered); returns
        whether it was finite, this rank's rows' squared error and the fire counts ([d_sae], this shard's part
        filled) that the gang's sums need."""
        shards = coder.shards
        rows = gather_rows(x, shards)
        target_rows = None if target is None else gather_rows(target, shards)
        y_rows = rows if target_rows is None else target_rows
        counts = torch.zeros(member.d_sae, device=self.device)
        squared_error = torch.zeros((), device=self.device)
        # The group's ranks see the same rows, hence take the same branches (their collectives stay in step).
        finite = bool(torch.isfinite(rows).all()) and bool(torch.isfinite(y_rows).all()) and \
            math.isfinite(gang_variance)
        if not finite:
            return False, squared_error, counts
        replicas = self.config.world_size // shards.size
        with autocast:
            out = coder(rows, target=target_rows, dead_mask=member.dead_mask(self.training.dead_window_tokens),
                        variance=gang_variance / replicas)
        if not bool(torch.isfinite(out.loss)):
            return False, squared_error, counts
        out.loss.backward()
        with torch.no_grad():
            n = x.shape[0]
            own = slice(shards.index * n, (shards.index + 1) * n)
            y = x if target is None else target
            squared_error = (out.reconstruction[own].float() - y).pow(2).sum()
            counts[coder.offset:coder.offset + coder.width] = out.counts
        return True, squared_error, counts

    def _gang_variances(self, targets: list[torch.Tensor]) -> list[float]:
        """Σ‖y − ȳ‖² of each member's target over the whole gang batch (ȳ its mean), from one all-reduce of
        Σy, Σ‖y‖² and the row count; float64 so that the difference of the two sums keeps its precision."""
        assert self.collective is not None
        unique = list({id(y): y for y in targets}.values())  # SAEs of one hook share the same tensor
        parts = []
        for y in unique:
            y64 = y.to(torch.float64)
            parts += [y64.sum(0), y64.pow(2).sum().reshape(1), torch.tensor([float(y.shape[0])], dtype=torch.float64,
                                                                            device=y.device)]
        flat = self.collective.sum_(torch.cat(parts))
        variances, offset = {}, 0
        for y in unique:
            d = y.shape[1]
            total, squares, rows = flat[offset:offset + d], float(flat[offset + d]), float(flat[offset + d + 1])
            offset += d + 2
            variances[id(y)] = squares - float(total.pow(2).sum()) / rows
        return [variances[id(y)] for y in targets]

    def _apply(self, flat: torch.Tensor, shard_flat: torch.Tensor | None) -> bool:
        world, offset, shard_offset, skipped_any = self.config.world_size, 0, 0, False
        replicas = world // self.shards.size if self.shards is not None else world
        factor = lr_factor(self.training.lr_schedule, self.step, self.total_steps)
        for member in self.members:
            reduced = member.reduced()
            sizes = [t.numel() for t in reduced]
            chunks = flat[offset:offset + sum(sizes)].split(sizes)
            offset += sum(sizes)
            gradients = member.gradients() if member.sharded else []
            gradient_sizes = [t.numel() for t in gradients]
            gradient_chunks = (shard_flat[shard_offset:shard_offset + sum(gradient_sizes)].split(gradient_sizes)
                               if shard_flat is not None and gradients else [])
            shard_offset += sum(gradient_sizes)
            counts = flat[offset:offset + member.d_sae]
            offset += member.d_sae
            squared_error, variance, bad, tokens = flat[offset:offset + 4].tolist()
            offset += 4
            if bad > 0:
                member.skipped += 1
                member.skipped_since_checkpoint += 1
                self.prometheus.skipped.labels(member.name).inc()
                skipped_any = True
                continue
            params = list(member.coder.parameters())
            with torch.no_grad():
                for tensor, chunk in zip(reduced, chunks, strict=True):
                    tensor.copy_(chunk.view_as(tensor) / world)
                for tensor, chunk in zip(gradients, gradient_chunks, strict=True):
                    tensor.copy_(chunk.view_as(tensor) / replicas)
                for param, grad in zip(params, gradients or reduced, strict=False):
                    param.grad = grad
            if self.training.gradient_clip_norm is not None:
                _clip(member, self.training.gradient_clip_norm)
            for group in member.optimizer.param_groups:
                group["lr"] = member.peak_lr * factor
            member.coder.before_step_()
            member.optimizer.step()
            member.coder.after_step_()
            fired = counts > 0
            member.since_fired += tokens
            member.since_fired[fired] = 0
            sums = member.sums
            sums.fires = counts.clone() if sums.fires is None else sums.fires + counts
            sums.squared_error += squared_error
            sums.variance += variance
            sums.active += float(counts.sum())
            sums.tokens += tokens
        return skipped_any

    # -- metrics -----------------------------------------------------------------------------------------------
    def _record(self) -> None:
        """Reduce the interval's sums over the gang, write one record per member (rank 0), start a new interval."""
        now = datetime.now(UTC).strftime(TIME_FORMAT)
        factor = lr_factor(self.training.lr_schedule, max(self.step - 1, 0), self.total_steps)
        records = []
        for member in self.members:
            self._reduce_sums(member)
            sums = member.sums
            if sums.tokens <= 0:
                continue
            fires = sums.fires if sums.fires is not None else torch.zeros(member.d_sae)
            fvu = sums.squared_error / sums.variance if sums.variance > 0 else None
            records.append({
                "step": self.step, "tokens": self.tokens, "sae": member.name, "time": now,
                "mse": sums.squared_error / (sums.tokens * member.d_out), "fvu": fvu,
                "explainedVariance": None if fvu is None else 1.0 - fvu,
                "l0": sums.active / sums.tokens,
                "deadFraction": float(member.dead_mask(self.training.dead_window_tokens).float().mean()),
                "denseFraction": float((fires / sums.tokens > self.training.dense_threshold).float().mean()),
                "lr": member.peak_lr * factor, "skippedSteps": member.skipped,
            })
            member.sums = type(sums)()
        self.log.write(records)
        self.prometheus.record(records)
        self.latest = {r["sae"]: r for r in records} | {
            name: r for name, r in self.latest.items() if name not in {x["sae"] for x in records}}

    def _downstream(self, stream: ModelStream) -> dict[str, dict[str, float | None]]:
        """CE loss recovered of every exported SAE (transcoders replace no activation: not measured) on the
        held-out contexts; one metrics record per SAE, shown in the progress report too."""
        saes = {m.name: (m.hook, load_sae(self.root / m.name, self.device)) for m in self.members
                if m.target_hook is None}
        if not saes or stream.held_out.shape[0] == 0:
            return {}
        losses = downstream_losses(stream.loaded.model, stream.held_out, saes, batch_size=stream.spec.batch_size)
        now = datetime.now(UTC).strftime(TIME_FORMAT)
        records = [{"step": self.step, "tokens": self.tokens, "sae": name, "time": now,
                    "heldOutTokens": int(stream.held_out.numel())} | result.to_dict()
                   for name, result in sorted(losses.items())]
        self.log.write(records)
        self.prometheus.record(records)
        for record in records:
            if record["sae"] in self.latest:
                self.latest[record["sae"]]["ceLossRecovered"] = record["ceLossRecovered"]
        return {name: result.to_dict() for name, result in sorted(losses.items())}

    def report(self) -> dict[str, Any]:
        """This rank's progress for the operator's poll (``GET /progress``)."""
        saes = [{"name": name, "step": r["step"], "l0": r["l0"], "fvu": r["fvu"],
                 "explainedVariance": r["explainedVariance"], "mse": r["mse"], "deadFraction": r["deadFraction"],
                 "denseFraction": r["denseFraction"], "skippedSteps": r["skippedSteps"],
                 "ceLossRecovered": r.get("ceLossRecovered")}
                for name, r in sorted(self.latest.items())]
        return {"rank": self.config.rank, "worldSize": self.config.world_size, "stage": self.stage,
                "step": self.step, "stepsTotal": self.total_steps, "tokensDone": self.tokens,
                "tokensTotal": self.total_steps * self.batch, "tokensPerSecond": round(self.reporter.rate(), 3),
                "lastCheckpoint": self.last_checkpoint, "saes": saes, "pid": os.getpid()}


def _clip(member: Member, max_norm: float) -> None:
    """Clip the member's whole gradient (all shards together) to ``max_norm``."""
    coder = member.coder
    if not isinstance(coder, ShardedCoder):
        torch.nn.utils.clip_grad_norm_(list(coder.parameters()), max_norm)
        return
    factor = float(max_norm / (coder.grad_norm() + 1e-6))  # the rule torch's clip_grad_norm_ applies
    if factor < 1:
        for param in coder.parameters():
            if param.grad is not None:
                param.grad.mul_(factor)


def _first_rows(store: ActivationStore | ModelStream, hooks: list[str], rows: int) -> dict[str, torch.Tensor]:
    """The stream's first rows (the same on every rank and world size), float32."""
    rows = min(rows, store.tokens)
    if isinstance(store, ModelStream):
        return store.first_rows(rows)
    return next(iter(StoreReader(store, hooks, rows, dtype=torch.float32))).activations


def _differences(mine: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted({*mine, *theirs}):
        a, b = mine.get(key), theirs.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _tuple(value: Any) -> Any:
    """JSON turned random.getstate()'s tuples into lists; setstate wants them back."""
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value
