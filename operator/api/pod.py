"""Pod-level shapes of the worker spec: affinity, extra volumes and their mounts, the shared model cache.

Kubernetes types the operator does not need to understand (pod affinity, most volume sources) are passed through
as written, with ``x-kubernetes-preserve-unknown-fields`` as JobSet and KubeRay embed core types; the API server
checks them when it creates the pods. What the operator must combine with its own pod parts (node affinity, volume
names, mount paths) is typed, so that a conflict is refused when the object is applied.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from .base import DNS_LABEL, DNS_SUBDOMAIN, ApiModel, ResourceQuantity, cel, list_map

KubeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through as written (the API server validates it in the pod)."""

NonEmptyKubeObject = Annotated[
    dict[str, Any],
    Field(min_length=1),
    WithJsonSchema({"type": "object", "minProperties": 1, "x-kubernetes-preserve-unknown-fields": True}),
]
"""A passed-through Kubernetes object that must name something (a volume source: its claim, Secret, driver...)."""

OPERATOR_VOLUMES = ("config", "podinfo", "tmp", "dshm", "model-cache")
"""Names of the volumes the operator adds to every pod; it also numbers pvc-<n> and secret-<n>."""
OPERATOR_VOLUME_PATTERN = "^(pvc|secret)-[0-9]+$"
OPERATOR_PATHS = ("/etc/interp", "/mnt/interp")
"""Trees the operator mounts its config, pod info, secrets and storage into."""
OPERATOR_MOUNT_POINTS = ("/tmp", "/dev/shm", "/dev/termination-log")
MODEL_CACHE_DIR = "/mnt/interp/model-cache"
"""Where the model cache is mounted; HF_HOME points at it."""

RESERVED_VOLUME_NAME = (
    "volume name is reserved: " + ", ".join(OPERATOR_VOLUMES) + ", pvc-<n> and secret-<n> are the operator's own"
)
RESERVED_MOUNT_PATH = (
    "mountPath is reserved: " + " and ".join(OPERATOR_PATHS) + " (and what is under them), "
    + ", ".join(OPERATOR_MOUNT_POINTS) + " are the operator's own"
)
HOST_PATH_REFUSED = (
    "hostPath volumes are refused: the pods run under the restricted Pod Security Standard; "
    "reach node-local data through a PersistentVolumeClaim (a local PersistentVolume) instead"
)
_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "ephemeral", "csi", "projected",
            "downwardAPI")


def _quoted(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class NodeSelectorRequirement(ApiModel):
    """A node label requirement, as in the core API: key, operator and values."""

    cel_rules = (
        cel("self.operator in ['Exists', 'DoesNotExist'] ? (!has(self.values) || size(self.values) == 0) : "
            "(has(self.values) && size(self.values) > 0 && (self.operator in ['In', 'NotIn'] || "
            "(size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))))",
            "values: at least one for In and NotIn, none for Exists and DoesNotExist, one integer for Gt and Lt"),
    )

    key: str = Field(max_length=316)
    """Node label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """How the label's value is compared with values."""
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=64)
    """Label values: at least one for In and NotIn, none for Exists and DoesNotExist, one integer for Gt and Lt."""


class NodeFieldSelectorRequirement(ApiModel):
    """A requirement on a node field; the API server allows only metadata.name, with one value."""

    key: Literal["metadata.name"]
    """Node field; only metadata.name."""
    operator: Literal["In", "NotIn"]
    """In: the node has this name; NotIn: any other node."""
    values: list[Annotated[str, Field(max_length=253)]] = Field(min_length=1, max_length=1)
    """The node name."""


class NodeSelectorTerm(ApiModel):
    """Requirements that all hold on a node (ANDed)."""

    match_expressions: list[NodeSelectorRequirement] = Field(default_factory=list, max_length=16)
    """Requirements on node labels."""
    match_fields: list[NodeFieldSelectorRequirement] = Field(default_factory=list, max_length=4)
    """Requirements on node fields (metadata.name)."""


class NodeSelector(ApiModel):
    """Node selector terms, ORed: a node matches when any one term does."""

    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=16)
    """The terms; a node must match at least one."""


class PreferredSchedulingTerm(ApiModel):
    """A weighted preference for nodes matching a term."""

    weight: int = Field(ge=1, le=100)
    """Added to a matching node's score."""
    preference: NodeSelectorTerm
    """The nodes preferred."""


class NodeAffinity(ApiModel):
    """Node affinity, as in the core API. Each pod's pin to its planned node is ANDed into every required term."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    """Nodes a pod may run on: with the builtin gang scheduler the operator adds its planned node to every term
    (so the pod needs a node that is both planned and matching), with another scheduler the terms go as written."""
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=16)
    """Nodes preferred, by weight; passed as written."""


class Affinity(ApiModel):
    """Scheduling constraints of every pod, as in the core Pod API, combined with the operator's placement."""

    node_affinity: NodeAffinity | None = None
    """Node affinity; the operator's pin to the planned node (builtin gang scheduler) is ANDed into it."""
    pod_affinity: KubeObject | None = None
    """Pod affinity (core PodAffinity), passed as written and checked by the API server in the pod."""
    pod_anti_affinity: KubeObject | None = None
    """Pod anti-affinity (core PodAntiAffinity), passed as written and checked by the API server in the pod."""


class PersistentVolumeClaimSource(ApiModel):
    """A PersistentVolumeClaim in the object's namespace as a volume."""

    claim_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the claim."""
    read_only: bool = False
    """Mount the claim read-only."""


class EmptyDirSource(ApiModel):
    """A scratch directory that lives as long as the pod."""

    medium: Literal["", "Memory"] = ""
    """Empty: the node's disk; Memory: a tmpfs counted against the pod's memory."""
    size_limit: ResourceQuantity | None = None
    """Most the directory may hold, e.g. 100Gi."""


class Volume(ApiModel):
    """An extra volume of every pod, with exactly one source of the kinds the restricted Pod Security Standard
    allows. Sources other than persistentVolumeClaim and emptyDir are passed as written (core API types)."""

    cel_rules = (
        cel("!has(self.hostPath)", HOST_PATH_REFUSED),
        cel(" + ".join(f"(has(self.{s}) ? 1 : 0)" for s in _SOURCES) + " == 1",
            "a volume needs exactly one source: " + ", ".join(_SOURCES)),
        cel(f"!(self.name in {_quoted(OPERATOR_VOLUMES)}) && !self.name.matches('{OPERATOR_VOLUME_PATTERN}')",
            RESERVED_VOLUME_NAME),
    )

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    """Volume name (a DNS label), referred to by volumeMounts."""
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    """A PersistentVolumeClaim (an NFS or Lustre share, say)."""
    empty_dir: EmptyDirSource | None = None
    """A per-pod scratch directory."""
    config_map: NonEmptyKubeObject | None = None
    """A ConfigMap's keys as files (core ConfigMapVolumeSource)."""
    secret: NonEmptyKubeObject | None = None
    """A Secret's keys as files (core SecretVolumeSource)."""
    ephemeral: NonEmptyKubeObject | None = None
    """A claim created and deleted with the pod (core EphemeralVolumeSource)."""
    csi: NonEmptyKubeObject | None = None
    """An inline CSI volume (core CSIVolumeSource)."""
    projected: NonEmptyKubeObject | None = None
    """Several sources in one directory (core ProjectedVolumeSource)."""
    downward_api: NonEmptyKubeObject | None = Field(None, alias="downwardAPI")
    """Pod fields as files (core DownwardAPIVolumeSource)."""
    host_path: KubeObject | None = None
    """Refused: listed only so that the API server can say why (the restricted Pod Security Standard forbids it)."""


class VolumeMount(ApiModel):
    """Where a volume of ``volumes`` appears in the workload container."""

    cel_rules = (
        cel(f"!(self.mountPath in {_quoted(OPERATOR_PATHS + OPERATOR_MOUNT_POINTS)}) && "
            + " && ".join(f"!self.mountPath.startsWith('{p}/')" for p in OPERATOR_PATHS),
            RESERVED_MOUNT_PATH),
    )

    name: str = Field(max_length=63, pattern=DNS_LABEL)
    """Name of a volume in volumes."""
    mount_path: str = Field(max_length=1024, pattern=r"^(/[^/]+)+$")
    """Absolute path in the container, without a trailing slash."""
    sub_path: str | None = Field(None, max_length=1024, pattern=r"^[^/].*$")
    """Path inside the volume to mount instead of its root (relative)."""
    read_only: bool = False
    """Mount read-only."""


class ModelCache(ApiModel):
    """A PersistentVolumeClaim every pod keeps its Hugging Face cache in (HF_HOME), shared by all ranks and
    restarts."""

    claim_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of a ReadWriteMany PersistentVolumeClaim in the object's namespace; every pod mounts it read-write at
    /mnt/interp/model-cache and HF_HOME points there, so the hub model is downloaded once."""
    sub_path: str | None = Field(None, max_length=1024, pattern=r"^[^/].*$")
    """Directory inside the claim (relative), to share one claim between caches. Defaults to its root."""


class LocalObjectReference(ApiModel):
    """An object in the same namespace, by name."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN)
    """Object name."""


LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
OPERATOR_KEY_PREFIX = "interp.dev/"

POD_METADATA_RULES = tuple(
    cel(f"!has(self.{field}) || self.{field}.all(k, !k.startsWith('{OPERATOR_KEY_PREFIX}'))",
        f"{field}: keys under {OPERATOR_KEY_PREFIX} are the operator's own")
    for field in ("podLabels", "podAnnotations")
)
VOLUME_MOUNT_RULE = cel(
    "!has(self.volumeMounts) || "
    "self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))",
    "every volumeMounts[].name must be the name of one of volumes",
)

VOLUMES_LIST = list_map("name")
VOLUME_MOUNTS_LIST = list_map("mountPath")
