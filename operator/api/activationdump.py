"""ActivationDump: run a model over a corpus and store activations at hook points, across many pods."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import ApiModel, Resource, cel
from .common import (
    CONDITIONS_LIST,
    Condition,
    Dtype,
    ModelRef,
    Placement,
    RestartPolicy,
    RunPolicy,
    SchedulingSpec,
    StorageRef,
    WorkerSpec,
)
from .dataset import DatasetSpec
from .saetrainingjob import JobPhase, ProgressStatus


class ShuffleSpec(ApiModel):
    """Global shuffle of the stored tokens, so that training reads i.i.d. batches."""

    enabled: bool = True
    """Shuffle tokens across the whole store (deterministic from seed)."""
    seed: int = Field(0, ge=0)
    """Seed of the permutation."""


class PodRestartPolicy(RestartPolicy):
    """What happens when a pod fails. Extraction ranks are independent and resumable: by default only the failed pod
    restarts, and it skips the shards it already wrote."""

    scope: Literal["Gang", "Pod"] = "Pod"
    """Pod: only the failed pod restarts (the default here). Gang: any failure restarts every pod."""


class ActivationDumpSpec(ApiModel):
    """Desired state of an ActivationDump."""

    cel_rules = (
        cel("self.tokensPerShard % self.contextLength == 0",
            "tokensPerShard must be a multiple of contextLength (a shard holds whole contexts)"),
    )

    model: ModelRef
    """The model to run."""
    dataset: DatasetSpec
    """The corpus to run it over."""
    context_length: int = Field(128, ge=8, le=131072)
    """Tokens per context (documents are packed and split at this length)."""
    batch_size: int = Field(16, ge=1, le=65536)
    """Contexts per forward pass, per process."""
    hook_points: list[str] = Field(
        min_length=1, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Hook points to store: canonical names (resid_post.6, mlp_out.3, attn_out.0, embed, final) or module paths."""
    dtype: Dtype = "bfloat16"
    """Dtype activations are stored in."""
    tokens_per_shard: int = Field(65536, ge=256, le=1 << 26)
    """Tokens per shard file, a multiple of contextLength (65536 tokens at d_model 4096 in bfloat16 is 512 MiB)."""
    shuffle: ShuffleSpec = Field(default_factory=ShuffleSpec)
    """Global shuffle of the stored tokens."""
    capture_gradients: bool = False
    """Also store the gradient of the language-model loss with respect to each hook point's activations."""
    output: StorageRef
    """Where the store (shards and manifest.json) is written."""
    parallelism: int = Field(1, ge=1, le=1024)
    """Extraction pods. Each takes a deterministic share of the contexts; the store is identical for any value."""
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    """The extraction pods."""
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    """Admission and placement."""
    restart_policy: PodRestartPolicy = Field(default_factory=PodRestartPolicy)
    """Failure handling."""
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    """Suspension, deadline and clean-up."""


class StoreSummary(ApiModel):
    """What the finished store holds (from its manifest)."""

    hook_points: list[str] = Field(default_factory=list)
    """Stored hook points."""
    d_model: int | None = None
    """Width of the stored activations."""
    dtype: str | None = None
    """Stored dtype."""
    tokens: int | None = None
    """Stored tokens per hook point."""


class ActivationDumpStatus(ApiModel):
    """Observed state of an ActivationDump, written by the operator."""

    phase: JobPhase = "Pending"
    """Pending, Running, Restarting, Succeeded, Failed or Suspended."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """Admitted, Running, Succeeded, Failed, Suspended conditions."""
    observed_generation: int | None = None
    """The .metadata.generation the status reflects."""
    replicas: int = 0
    """Pods created."""
    ready_replicas: int = 0
    """Pods running."""
    restarts: int = 0
    """Pod restarts so far."""
    consecutive_restarts: int = 0
    """Restarts since the last run of 10 minutes without a failure; the restart backoff doubles with each."""
    attempt: int = 0
    """Attempt number of the current pods (pod names carry it)."""
    placement: Placement | None = None
    """Nodes of the extraction pods."""
    shards_done: int = 0
    """Shards written and verified."""
    shards_total: int | None = None
    """Shards the store will hold."""
    bytes_written: int = 0
    """Bytes of shards written."""
    progress: ProgressStatus | None = None
    """Tokens done, percent and ETA."""
    stage: Literal["start", "extract", "shuffle", "verify", "done"] | None = None
    """Where the gang is: extract (forward passes; what the token progress counts), then shuffle across shards and
    verify the checksums (progress stays at 100% meanwhile), then done. The least advanced rank's stage."""
    manifest: str | None = None
    """Location of manifest.json once the store is complete."""
    summary: StoreSummary | None = None
    """What the finished store holds."""
    start_time: datetime | None = None
    """When extraction started."""
    completion_time: datetime | None = None
    """When the dump succeeded or failed."""


class ActivationDump(Resource):
    """Runs a model over a corpus and stores activations at chosen hook points: sharded, shuffled, with a manifest."""

    kind: Literal["ActivationDump"] = "ActivationDump"
    spec: ActivationDumpSpec
    status: ActivationDumpStatus | None = None
