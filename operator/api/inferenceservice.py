"""InterpInferenceService: a model server whose requests edit activations mid-forward-pass."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import DNS_LABEL, ApiModel, IntOrPercent, IntOrString, Resource, cel, list_map
from .common import CONDITIONS_LIST, Condition, ModelRef, Placement, SchedulingSpec, StorageRef, WorkerSpec

ServicePhase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed", "Suspended"]


class ServerLimits(ApiModel):
    """Request limits the server enforces (over-limit requests get HTTP 413/429 with a message)."""

    max_batch_tokens: int = Field(8192, ge=1, le=1 << 22)
    """Tokens (prompt + generated) in one batched forward pass."""
    max_new_tokens: int = Field(256, ge=0, le=65536)
    """Largest max_new_tokens a request may ask for."""
    max_concurrent_requests: int = Field(64, ge=1, le=65536)
    """Requests in flight per replica; more are refused with 429."""
    request_timeout_seconds: int = Field(60, ge=1, le=3600)
    """A request running longer is cancelled with 504."""
    max_request_bytes: int = Field(1 << 20, ge=1024, le=1 << 30)
    """Largest request body (steering vectors included)."""


class AuthSpec(ApiModel):
    """Bearer-token authentication: tokens come from a Secret key (one token per line).
    Disabling it must be explicit."""

    cel_rules = (
        cel("self.disabled != has(self.secretName)", "set either secretName or disabled: true (not both)"),
    )

    secret_name: str | None = Field(None, max_length=253, pattern=DNS_LABEL)
    """Secret in the same namespace holding the accepted tokens."""
    key: str = Field("tokens", max_length=253)
    """Key of the Secret with one token per line."""
    disabled: bool = False
    """Serve without authentication (only behind another authenticating proxy)."""


class SAERef(ApiModel):
    """A trained SAE the server loads, for feature clamping and ablation by name."""

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    """Name requests use to refer to this SAE."""
    hook_point: str = Field(min_length=1, max_length=256)
    """Hook point the SAE reads and writes."""
    storage: StorageRef
    """Directory with the SAE's cfg.json and sae.safetensors."""


class SteeringVectorRef(ApiModel):
    """A named steering vector requests can apply by name."""

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    """Name requests use."""
    hook_point: str | None = Field(None, max_length=256)
    """Default hook point; a request may override it."""
    storage: StorageRef
    """A safetensors file holding one tensor named "vector" of shape [d_model]."""


class RolloutSpec(ApiModel):
    """How a changed spec replaces running replicas."""

    cel_rules = (
        cel(
            "!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",
            "maxSurge and maxUnavailable must not both be zero",
        ),
    )

    max_surge: IntOrString = 0
    """Extra replicas during a rollout (absolute or percent). 0 by default: an upgrade needs no extra GPUs."""
    max_unavailable: IntOrPercent = 1
    """Replicas that may be down during a rollout (absolute or percent, at most 100%)."""


class InterpInferenceServiceSpec(ApiModel):
    """Desired state of an InterpInferenceService."""

    model: ModelRef
    """The model to serve."""
    replicas: int = Field(1, ge=0, le=1024)
    """Server replicas (the scale subresource: kubectl scale and HorizontalPodAutoscalers set this)."""
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    """The server pods."""
    port: int = Field(8000, ge=1024, le=65535)
    """HTTP port of the server."""
    limits: ServerLimits = Field(default_factory=ServerLimits)
    """Request limits."""
    auth: AuthSpec
    """Authentication of API requests."""
    saes: list[SAERef] = Field(default_factory=list, max_length=256, json_schema_extra=list_map("name"))
    """SAEs to load."""
    steering_vectors: list[SteeringVectorRef] = Field(
        default_factory=list, max_length=1024, json_schema_extra=list_map("name")
    )
    """Named steering vectors to load."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """Rollout of spec changes."""
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    """Placement of the server pods."""


class InterpInferenceServiceStatus(ApiModel):
    """Observed state of an InterpInferenceService, written by the operator."""

    phase: ServicePhase = "Pending"
    """Pending, Progressing, Ready, Degraded, Failed or Suspended."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST)
    """Ready and Progressing conditions."""
    observed_generation: int | None = None
    """The .metadata.generation the status reflects."""
    replicas: int = 0
    """Server pods that exist."""
    ready_replicas: int = 0
    """Server pods that are ready."""
    updated_replicas: int = 0
    """Server pods running the current spec."""
    restarts: int = 0
    """Server pod restarts so far."""
    consecutive_restarts: int = 0
    """Restarts since the last run of 10 minutes without a failure; the restart backoff doubles with each."""
    attempt: int = 0
    """Attempt number of the current pods (pod names carry it)."""
    placement: Placement | None = None
    """Nodes of the server pods."""
    start_time: datetime | None = None
    """When the first server pods were created."""
    selector: str | None = None
    """Label selector of the server pods (for the scale subresource and HPAs)."""
    url: str | None = None
    """In-cluster URL of the service."""


class InterpInferenceService(Resource):
    """Serves a model whose API edits activations mid-forward-pass: steering, SAE feature edits, capture, gradients."""

    kind: Literal["InterpInferenceService"] = "InterpInferenceService"
    spec: InterpInferenceServiceSpec
    status: InterpInferenceServiceStatus | None = None
