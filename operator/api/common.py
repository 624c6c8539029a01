"""Shapes shared by the three kinds: model and storage references, worker pods, gangs, scheduling, policies, status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from .base import DNS_LABEL, DNS_SUBDOMAIN, ApiModel, ResourceQuantity, cel, list_map
from .pod import (
    LABEL_VALUE,
    POD_METADATA_RULES,
    VOLUME_MOUNT_RULE,
    VOLUME_MOUNTS_LIST,
    VOLUMES_LIST,
    Affinity,
    LocalObjectReference,
    ModelCache,
    Volume,
    VolumeMount,
)

Dtype = Literal["float32", "bfloat16", "float16"]

STORAGE_URI_UNSUPPORTED = (
    "s3:// and gs:// are not supported yet: use a PersistentVolumeClaim (claimName) or file://"
)
"""Why a StorageRef with an object-storage URI is refused: the workloads cannot read or write those yet."""


class StorageRef(ApiModel):
    """Where data lives: a PersistentVolumeClaim (plus an optional sub-path) or a URI. Exactly one of the two."""

    cel_rules = (
        cel("has(self.claimName) != has(self.uri)", "exactly one of claimName or uri must be set"),
        cel("!has(self.subPath) || has(self.claimName)", "subPath applies only to a PVC (claimName)"),
        # The pattern keeps the object-storage schemes so that such a URI gets this message, not a pattern mismatch.
        cel("!has(self.uri) || self.uri.startsWith('file://')", STORAGE_URI_UNSUPPORTED),
    )

    claim_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of a PersistentVolumeClaim in the object's namespace; it is mounted into every pod."""
    sub_path: str | None = Field(None, max_length=1024, pattern=r"^[^/].*$")
    """Relative path inside the claim (no leading slash). Defaults to the claim's root."""
    uri: str | None = Field(None, max_length=2048, pattern=r"^(file|s3|gs)://.+$")
    """A URI instead of a claim: file:// (a path every node can reach); s3:// and gs:// are not supported yet."""
    read_only: bool = False
    """Mount the claim read-only. Inputs (models, datasets) should set this."""


class ModelRef(ApiModel):
    """A causal language model in Hugging Face format: a hub id or a directory on storage. Exactly one of the two."""

    cel_rules = (cel("has(self.hubId) != has(self.storage)", "exactly one of hubId or storage must be set"),)

    hub_id: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
    """Hugging Face hub id such as "EleutherAI/pythia-70m". The pods need access to the hub (or a mirror)."""
    storage: StorageRef | None = None
    """Directory holding config.json, tokenizer files and *.safetensors weights."""
    revision: str | None = Field(None, max_length=256)
    """Hub revision (branch, tag or commit) to pin. Ignored for storage."""
    dtype: Dtype = "bfloat16"
    """Dtype the model weights are loaded in."""
    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run. Off by default: it executes arbitrary code."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the object's namespace."""

    name: str = Field(max_length=253, pattern=DNS_LABEL)
    """Secret name."""
    key: str = Field(max_length=253)
    """Key inside the Secret."""


class EnvVar(ApiModel):
    """An environment variable: a literal value or a key of a Secret."""

    cel_rules = (cel("has(self.value) != has(self.secretKeyRef)", "exactly one of value or secretKeyRef"),)

    name: str = Field(max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""
    value: str | None = Field(None, max_length=32768)
    """Literal value."""
    secret_key_ref: SecretKeyRef | None = None
    """Take the value from a key of a Secret in the object's namespace."""


class Toleration(ApiModel):
    """A pod toleration, as in the core Pod API."""

    key: str | None = Field(None, max_length=316)
    """Taint key; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value; Equal matches value."""
    value: str | None = Field(None, max_length=63)
    """Taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates all effects."""
    toleration_seconds: int | None = Field(None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""


_EXTENDED = "k.contains('/') && !k.startsWith('kubernetes.io/')"
"""An extended resource (nvidia.com/gpu, say): a name with a domain outside kubernetes.io, as the API server says."""


class Resources(ApiModel):
    """Compute resources of each worker pod, as in the core API (e.g. cpu, memory, nvidia.com/gpu)."""

    cel_rules = (
        cel("(!has(self.requests) || self.requests.all(k, !string(self.requests[k]).startsWith('-'))) && "
            "(!has(self.limits) || self.limits.all(k, !string(self.limits[k]).startsWith('-')))",
            "resource quantities must not be negative"),
        cel(f"(!has(self.requests) || self.requests.all(k, !({_EXTENDED}) || "
            "string(self.requests[k]).matches('^[0-9]+$'))) && "
            f"(!has(self.limits) || self.limits.all(k, !({_EXTENDED}) || string(self.limits[k]).matches('^[0-9]+$')))",
            "extended resources such as nvidia.com/gpu must be whole numbers"),
        cel(f"!has(self.requests) || self.requests.all(k, !({_EXTENDED}) || "
            "(has(self.limits) && k in self.limits && string(self.limits[k]) == string(self.requests[k])))",
            "an extended resource such as nvidia.com/gpu requested needs a limit equal to its request"),
    )

    requests: dict[str, ResourceQuantity] = Field(default_factory=dict, max_length=16)
    """Minimum resources the scheduler reserves, e.g. {cpu: 8, memory: 64Gi, nvidia.com/gpu: 8}. Quantities are in
    Kubernetes' format and not negative."""
    limits: dict[str, ResourceQuantity] = Field(default_factory=dict, max_length=16)
    """Maximum resources. Extended resources (nvidia.com/gpu) are whole numbers, and one that is requested needs an
    equal limit (the API server enforces the same for pods); a limit alone also requests that much."""


class WorkerSpec(ApiModel):
    """The pods that run the workload: image, resources, placement and pod-level settings. Pod names and the
    operator's own labels, volumes and mounts are set by the operator; what is set here is added to every pod."""

    cel_rules = (*POD_METADATA_RULES, VOLUME_MOUNT_RULE)

    image: str | None = Field(None, max_length=1024)
    """Container image with interp-operator's workloads. Defaults to the image the operator was installed with."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image."""
    processes_per_pod: int = Field(1, ge=1, le=64)
    """Worker processes per pod (torchrun --nproc-per-node), usually the number of GPUs per pod."""
    resources: Resources = Field(default_factory=Resources)
    """Requests and limits of each pod."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64, json_schema_extra=list_map("name"))
    """Extra environment variables for the workload container (e.g. HF_TOKEN from a Secret)."""
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Node labels every pod requires."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the pods tolerate (GPU nodes are often tainted)."""
    affinity: Affinity | None = None
    """Node and pod (anti-)affinity of every pod. With the builtin gang scheduler the plan only picks nodes that
    meet the required node affinity terms, and each pod's pin to its planned node is ANDed into every one of them."""
    priority_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN)
    """PriorityClass of the pods; decides preemption order on a shared cluster."""
    runtime_class_name: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN)
    """RuntimeClass of the pods, e.g. nvidia where the NVIDIA container runtime is not the node's default."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16,
                                                           json_schema_extra=list_map("name"))
    """Secrets (kubernetes.io/dockerconfigjson) the kubelet pulls a private image with."""
    service_account_name: str | None = Field(None, max_length=253, pattern=DNS_LABEL)
    """ServiceAccount the pods run as (for storage credentials through workload identity, say)."""
    pod_labels: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=32)
    """Labels added to every pod (cost centre, team, network policy selectors). Keys under interp.dev/ are the
    operator's; the labels that hand a gang to Kueue or coscheduling are set by the operator over these."""
    pod_annotations: dict[str, Annotated[str, Field(max_length=16384)]] = Field(default_factory=dict, max_length=32)
    """Annotations added to every pod (a sidecar injector's or a network plugin's, say). Keys under interp.dev/ are
    the operator's; the one that hands a gang to Volcano is set by the operator over these."""
    volumes: list[Volume] = Field(default_factory=list, max_length=32, json_schema_extra=VOLUMES_LIST)
    """Extra volumes of every pod (a dataset share, a CA bundle). Names must differ from the operator's own."""
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=32,
                                             json_schema_extra=VOLUME_MOUNTS_LIST)
    """Where volumes appear in the workload container; paths under /etc/interp and /mnt/interp are the operator's."""
    model_cache: ModelCache | None = None
    """A shared Hugging Face cache: every rank and every restart loads the hub model from this claim instead of
    downloading it into the pod's own scratch space. Unset: each pod has a private cache that dies with it."""


class GangSpec(WorkerSpec):
    """A gang of ranked pods that start together (torch.distributed); elastic between minReplicas and maxReplicas."""

    cel_rules = (
        cel(
            "!has(self.minReplicas) || self.minReplicas <= self.replicas",
            "minReplicas must be <= replicas",
        ),
        cel(
            "!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
            "replicas must be <= maxReplicas",
        ),
    )

    replicas: int = Field(1, ge=1, le=4096)
    """Pods in the gang. With minReplicas/maxReplicas set (elastic), every start uses the largest size in
    [minReplicas, maxReplicas] that fits at that moment."""
    min_replicas: int | None = Field(None, ge=1, le=4096)
    """Elastic lower bound: a (re)start may use fewer pods than replicas, never fewer than this."""
    max_replicas: int | None = Field(None, ge=1, le=4096)
    """Elastic upper bound: the gang grows up to this at a restart boundary when capacity appears."""


class TopologySpec(ApiModel):
    """Pack the gang into one topology domain (NVLink clique, rack, zone), tightest first."""

    keys: list[str] = Field(min_length=1, max_length=8)
    """Node label keys from the tightest domain to the widest,
    e.g. [nvidia.com/gpu.clique, topology.kubernetes.io/zone]."""
    mode: Literal["Required", "Preferred"] = "Required"
    """Required: the gang waits until one domain of the widest key holds it all. Preferred: spread if none does."""


class SchedulingSpec(ApiModel):
    """Who admits and places the gang."""

    cel_rules = (
        cel(
            "self.gangScheduler != 'kueue' || has(self.queueName)",
            "queueName is required when gangScheduler is kueue",
        ),
    )

    gang_scheduler: Literal["builtin", "volcano", "kueue", "coscheduling"] = "builtin"
    """builtin: the operator starts a gang only when all of it fits. volcano / coscheduling: a PodGroup is created
    and that scheduler admits the gang. kueue: the object is admitted through a Kueue LocalQueue (queueName)."""
    queue_name: str | None = Field(None, max_length=253)
    """Kueue LocalQueue (kueue.x-k8s.io/queue-name) or Volcano queue for the gang."""
    topology: TopologySpec | None = None
    """Topology-aware placement; unset places pods anywhere they fit."""


class RestartPolicy(ApiModel):
    """What happens when a pod fails: restart (the whole gang or the one pod) with exponential backoff, or fail."""

    cel_rules = (
        cel(
            "self.backoffBaseSeconds <= self.backoffMaxSeconds",
            "backoffBaseSeconds must be <= backoffMaxSeconds",
        ),
    )

    scope: Literal["Gang", "Pod"] = "Gang"
    """Gang: any failure restarts every pod (collective training).
    Pod: only the failed pod restarts (independent ranks)."""
    backoff_limit: int = Field(3, ge=0, le=1000)
    """Restarts allowed before the object fails."""
    backoff_base_seconds: int = Field(10, ge=0, le=86400)
    """Delay before the first restart; doubles with every further restart."""
    backoff_max_seconds: int = Field(600, ge=0, le=86400)
    """Upper bound of the restart delay."""
    backoff_reset_seconds: int = Field(600, ge=1, le=86400)
    """A run this long without a failure (the gang's; with scope Pod, the object's) resets the delay: the next
    failure waits backoffBaseSeconds again, as the kubelet resets CrashLoopBackOff after 10 minutes of running.
    backoffLimit still counts every restart."""
    permanent_exit_codes: list[int] = Field(
        default_factory=lambda: [2, 3, 126, 127],
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Container exit codes that retrying cannot fix (bad config, missing command): the object fails at once.
    The bundled workloads exit with 3 on an invalid config."""


class RunPolicy(ApiModel):
    """Lifecycle of a run: suspension, deadline, clean-up."""

    suspend: bool = False
    """Suspended objects have no pods; setting it on a running object deletes its pods
    (progress is kept in checkpoints)."""
    active_deadline_seconds: int | None = Field(None, ge=1)
    """Fail the run when it has been active this long."""
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    """Delete the object this long after it succeeded or failed."""
    clean_pod_policy: Literal["Running", "All"] = "Running"
    """Which pods of an ended attempt (the object finished, or the gang restarts) are deleted. Running: only those
    still running; the exited ones — the failed pod with its log and termination message — stay for inspection,
    those of a finished object until it is deleted, those of a restarted gang until the next attempt ends.
    All: every pod of the attempt, exited ones too."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A status condition following the Kubernetes API conventions."""

    type: str = Field(max_length=316)
    """Condition type, e.g. Ready, Progressing, Admitted, Failed."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(max_length=1024)
    """CamelCase reason for the last transition."""
    message: str = Field("", max_length=32768)
    """Human-readable details."""
    observed_generation: int | None = Field(None, ge=0)
    """The .metadata.generation this condition was computed from."""
    last_transition_time: datetime | None = None
    """When status last changed."""


CONDITIONS_LIST = list_map("type")


class Placement(ApiModel):
    """Where the gang runs."""

    topology_key: str | None = None
    """Label key of the domain the gang was packed into."""
    domain: str | None = None
    """Value of that label (e.g. the rack's name)."""
    nodes: list[str] = Field(default_factory=list, max_length=4096)
    """Nodes running the gang's pods, by rank."""
