"""SAETrainingJob: train one or many sparse autoencoders on one activation stream, as a gang of pods."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import DNS_LABEL, ApiModel, Resource, cel, list_map
from .common import (
    CONDITIONS_LIST,
    Condition,
    GangSpec,
    ModelRef,
    Placement,
    RestartPolicy,
    RunPolicy,
    SchedulingSpec,
    StorageRef,
)
from .dataset import DatasetSpec

Architecture = Literal["topk", "batchtopk", "jumprelu", "relu"]
JobPhase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]


class ActivationDumpRef(ApiModel):
    """An ActivationDump in the same namespace whose store the job reads."""

    name: str = Field(max_length=253, pattern=DNS_LABEL)
    """Name of the ActivationDump. The job waits until it has Succeeded."""


class OnTheFlySpec(ApiModel):
    """Extract activations while training: the model runs inside the training pods."""

    dataset: DatasetSpec
    """Text corpus to run the model over."""
    context_length: int = Field(128, ge=8, le=131072)
    """Tokens per context."""
    batch_size: int = Field(32, ge=1, le=65536)
    """Contexts per forward pass."""


class DataSpec(ApiModel):
    """The activation stream: a finished ActivationDump, a store on storage, or on-the-fly extraction. Exactly one."""

    cel_rules = (
        cel("(has(self.activationDump) ? 1 : 0) + (has(self.store) ? 1 : 0) + (has(self.onTheFly) ? 1 : 0) == 1",
            "exactly one of activationDump, store or onTheFly must be set"),
    )

    activation_dump: ActivationDumpRef | None = None
    """Read activations that an ActivationDump stored. The job waits until it has Succeeded."""
    store: StorageRef | None = None
    """Read an activation store directly (one an ActivationDump wrote elsewhere, or a standalone run's file:// path)."""
    on_the_fly: OnTheFlySpec | None = None
    """Run the model and train on its activations directly."""


class SAESpec(ApiModel):
    """One sparse autoencoder; all SAEs of a job are trained from the same activation stream."""

    cel_rules = (
        cel(
            "has(self.dictSize) != has(self.expansionFactor)",
            "exactly one of dictSize or expansionFactor must be set",
        ),
        cel(
            "!(self.architecture in ['topk', 'batchtopk']) || has(self.k)",
            "k is required for topk and batchtopk architectures",
        ),
        cel(
            "!has(self.k) || !has(self.dictSize) || self.k < self.dictSize",
            "k must be smaller than dictSize",
        ),
        cel(
            "!(self.architecture in ['jumprelu', 'relu']) || has(self.sparsityCoefficient)",
            "sparsityCoefficient is required for jumprelu and relu architectures",
        ),
    )

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    """Unique name within the job; the SAE is written to <output>/<name>/."""
    hook_point: str = Field(min_length=1, max_length=256)
    """Where activations are read: a canonical name (resid_post.6, mlp_out.3, attn_out.0, embed) or a module path."""
    target_hook_point: str | None = Field(None, min_length=1, max_length=256)
    """Transcoder: reconstruct the activations of this hook point (e.g. mlp_out.3) from those of hookPoint.
    Unset: an ordinary SAE that reconstructs its input."""
    architecture: Architecture = "topk"
    """topk: keep the k largest latents per token. batchtopk: keep the k·batch largest latents per batch.
    jumprelu: learned per-latent thresholds with an L0 penalty. relu: ReLU with an L1 penalty."""
    dict_size: int | None = Field(None, ge=1, le=1 << 24)
    """Number of latents."""
    expansion_factor: int | None = Field(None, ge=1, le=1024)
    """Number of latents as a multiple of the model's hidden size at the hook point."""
    k: int | None = Field(None, ge=1, le=65536)
    """Active latents per token (topk, batchtopk; also the inference-time k of batchtopk)."""
    sparsity_coefficient: float | None = Field(None, ge=0)
    """L1 (relu) or L0 (jumprelu) penalty coefficient."""
    learning_rate: float | None = Field(None, gt=0, le=1)
    """Peak learning rate for this SAE; defaults to training.learningRate (often scaled by 1/sqrt(dictSize/16384))."""
    aux_k_coefficient: float = Field(1 / 32, ge=0)
    """Weight of the AuxK loss that revives dead latents (topk, batchtopk)."""
    seed: int = Field(0, ge=0)
    """Seed of this SAE's initialisation."""


class LrScheduleSpec(ApiModel):
    """Learning-rate schedule: linear warm-up, then constant, then an optional decay to zero."""

    warmup_steps: int = Field(1000, ge=0)
    """Steps of linear warm-up from zero."""
    decay: Literal["none", "linear", "cosine"] = "linear"
    """Shape of the final decay."""
    decay_start_fraction: float = Field(0.8, ge=0, le=1)
    """Fraction of training after which the decay starts."""


class TrainingSpec(ApiModel):
    """Optimisation and checkpointing settings shared by all SAEs of the job."""

    cel_rules = (cel("self.tokens >= self.batchSizeTokens", "tokens must be at least batchSizeTokens"),)

    tokens: int = Field(ge=1)
    """Total training tokens."""
    batch_size_tokens: int = Field(4096, ge=1, le=1 << 24)
    """Tokens per optimiser step, across the whole gang."""
    learning_rate: float = Field(2e-4, gt=0, le=1)
    """Peak learning rate (Adam)."""
    lr_schedule: LrScheduleSpec = Field(default_factory=LrScheduleSpec)
    """Learning-rate schedule."""
    checkpoint_interval_steps: int = Field(1000, ge=1)
    """Steps between checkpoints; a restarted gang resumes from the last one."""
    checkpoint_interval_minutes: float | None = Field(None, gt=0)
    """Also checkpoint when this many minutes passed since the last checkpoint (whichever comes first)."""
    checkpoints_kept: int = Field(2, ge=1, le=100)
    """Complete checkpoints kept; older ones are deleted (a corrupt latest falls back to the previous)."""
    metrics_interval_steps: int = Field(100, ge=1)
    """Steps between metric records (JSONL log, status, Prometheus)."""
    gradient_clip_norm: float | None = Field(None, gt=0)
    """Clip each SAE's gradient to this global L2 norm before the optimiser step. Unset: no clipping."""
    max_skipped_steps: int = Field(20, ge=1)
    """Steps with a non-finite batch or loss (skipped, never applied) tolerated between two checkpoints; one more
    rolls the run back to the last checkpoint, and reaching it again after the roll-back fails the job."""
    dead_window_tokens: int = Field(10_000_000, ge=1)
    """A latent that did not fire for this many tokens counts as dead (and feeds the AuxK loss)."""
    dense_threshold: float = Field(0.1, gt=0, le=1)
    """A latent firing on more than this fraction of tokens counts as dense."""
    shuffle_window_tokens: int = Field(0, ge=0)
    """Permute the store's rows within windows of this many rows, per epoch (0: read in store order, which an
    ActivationDump with shuffle already mixed)."""
    collective_timeout_seconds: int = Field(300, ge=5, le=86400)
    """A collective (gradient all-reduce, checkpoint barrier) that waits longer than this for a peer fails the rank,
    so that a dead peer restarts the gang instead of hanging it."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the SAE forward/backward (parameters and optimiser state stay float32)."""
    latent_sharding: bool = False
    """Shard every dictionary's latents across ranks (for dictionaries too large for one GPU)
    instead of replicating it."""
    normalize_activations: bool = True
    """Scale inputs so that E[||x||²] = d_model, so hyperparameters transfer across models and layers."""
    seed: int = Field(0, ge=0)
    """Seed of data order."""


class SAETrainingJobSpec(ApiModel):
    """Desired state of an SAETrainingJob."""

    model: ModelRef
    """The model whose activations the SAEs learn."""
    data: DataSpec
    """Where the activations come from."""
    saes: list[SAESpec] = Field(min_length=1, max_length=64, json_schema_extra=list_map("name"))
    """The SAEs to train, keyed by name."""
    training: TrainingSpec
    """Optimisation settings."""
    output: StorageRef
    """Where checkpoints and the final SAEs (safetensors + cfg.json) are written."""
    gang: GangSpec = Field(default_factory=GangSpec)
    """The pods that train."""
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    """Gang admission and topology-aware placement."""
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    """Failure handling; training restarts the whole gang from the last checkpoint."""
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    """Suspension, deadline and clean-up."""


class CheckpointStatus(ApiModel):
    """The last checkpoint written."""

    step: int = Field(ge=0)
    """Optimiser step."""
    tokens: int = Field(ge=0)
    """Tokens consumed up to it."""
    time: datetime | None = None
    """When it was written."""
    path: str | None = None
    """Where it was written."""


class ProgressStatus(ApiModel):
    """How far the run is."""

    tokens_done: int = Field(0, ge=0)
    """Tokens processed."""
    tokens_total: int = Field(0, ge=0)
    """Tokens to process."""
    percent: float = Field(0, ge=0, le=100)
    """tokensDone / tokensTotal in percent."""
    tokens_per_second: float | None = Field(None, ge=0)
    """Recent throughput of the whole gang."""
    eta: datetime | None = None
    """Estimated completion time at the recent throughput."""


class SAEMetrics(ApiModel):
    """Latest evaluation metrics of one SAE."""

    name: str
    """SAE name."""
    step: int = Field(0, ge=0)
    """Step the metrics were computed at."""
    l0: float | None = None
    """Mean number of active latents per token."""
    fvu: float | None = None
    """Fraction of variance unexplained (1 - explained variance)."""
    explained_variance: float | None = None
    """Explained variance of the reconstruction."""
    mse: float | None = None
    """Mean squared reconstruction error."""
    dead_fraction: float | None = Field(None, ge=0, le=1)
    """Fraction of latents that did not fire in the dead-latent window."""
    dense_fraction: float | None = Field(None, ge=0, le=1)
    """Fraction of latents that fired on more than training.denseThreshold of the recent tokens."""
    skipped_steps: int | None = Field(None, ge=0)
    """Steps skipped because the batch or loss was not finite."""


class SAETrainingJobStatus(ApiModel):
    """Observed state of an SAETrainingJob, written by the operator."""

    phase: JobPhase = "Pending"
    """Pending, Running, Restarting, Succeeded, Failed or Suspended."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """Admitted, Running, Restarting, Succeeded, Failed, Suspended conditions."""
    observed_generation: int | None = None
    """The .metadata.generation the status reflects."""
    replicas: int = 0
    """Pods created for the current attempt."""
    ready_replicas: int = 0
    """Pods running and ready."""
    world_size: int | None = None
    """torch.distributed world size of the current attempt (pods × processesPerPod)."""
    restarts: int = 0
    """Gang restarts so far."""
    consecutive_restarts: int = 0
    """Restarts since the last run of 10 minutes without a failure; the restart backoff doubles with each."""
    attempt: int = 0
    """Attempt number of the current gang (pod names carry it)."""
    placement: Placement | None = None
    """Topology domain and nodes of the current attempt."""
    last_checkpoint: CheckpointStatus | None = None
    """Most recent checkpoint."""
    progress: ProgressStatus | None = None
    """Tokens done, percent and ETA."""
    stage: Literal["start", "train", "export", "downstream", "done"] | None = None
    """Where the gang is: train (what the token progress counts), then export the SAEs and, with on-the-fly data,
    downstream (CE loss recovered), then done. The least advanced rank's stage."""
    saes: list[SAEMetrics] = Field(default_factory=list, json_schema_extra=list_map("name"))
    """Per-SAE metrics."""
    exports: str | None = None
    """Where the verified SAEs are once succeeded (pvc://CLAIM/SUBPATH or the output URI): one folder per SAE."""
    start_time: datetime | None = None
    """When the first attempt started running."""
    completion_time: datetime | None = None
    """When the job succeeded or failed."""


class SAETrainingJob(Resource):
    """Trains sparse autoencoders (TopK, BatchTopK, JumpReLU, ReLU-L1) on a model's activations as a gang of pods."""

    kind: Literal["SAETrainingJob"] = "SAETrainingJob"
    spec: SAETrainingJobSpec
    status: SAETrainingJobStatus | None = None
