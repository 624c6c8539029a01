"""Pure builders: (object, attempt, plan) → the pods, Service, ConfigMap and PodGroup of a gang.

Nothing here talks to the API; the reconciler diffs what these return against what exists.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.common import EnvVar, SchedulingSpec, StorageRef, WorkerSpec
from ..api.pod import MODEL_CACHE_DIR
from . import naming

CONFIG_DIR = "/etc/interp"
CONFIG_FILE = "config.json"
PODINFO_DIR = "/etc/interp/podinfo"
SECRETS_DIR = "/etc/interp/secrets"
STORAGE_ROOT = "/mnt/interp"
POD_HF_HOME = "/tmp/hf-home"
"""The Hugging Face cache of a pod without a model cache: its scratch space, lost with the pod."""
RENDEZVOUS_PORTS = (29500, 1000)
STATUS_PORT_NAME = "status"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
RUN_AS_USER = 65532
DEFAULT_IMAGE = "ghcr.io/interp-operator/interp-operator:0.1.0"
# Gang hand-offs: the scheduler that admits the gang, and how pods name their group.
VOLCANO_SCHEDULER = "volcano"
COSCHEDULING_SCHEDULER = "scheduler-plugins-scheduler"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"
COSCHEDULING_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"


@dataclass(frozen=True)
class Mount:
    """A StorageRef the workload reads or writes, mounted at STORAGE_ROOT/<role>."""

    role: str
    storage: StorageRef
    read_only: bool

    @property
    def path(self) -> str:
        return f"{STORAGE_ROOT}/{self.role}"


@dataclass(frozen=True)
class SecretFile:
    """One key of a Secret as a read-only file, at SECRETS_DIR/<role>/<key>; ``env`` names the variable that holds
    the file's path (runtimes that relocate mounts rewrite env)."""

    role: str
    secret_name: str
    key: str
    env: str

    @property
    def path(self) -> str:
        return f"{SECRETS_DIR}/{self.role}/{self.key}"


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta["name"], meta["namespace"], meta["uid"])

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class GangPlan:
    """Everything that decides the pods of one attempt."""

    owner: Owner
    worker: WorkerSpec
    scheduling: SchedulingSpec
    module: str
    """Workload module run with `python -m` (or torchrun -m)."""
    attempt: int
    size: int
    nodes: tuple[str, ...] = ()
    """Planned node per rank (builtin gang scheduler); empty when another scheduler places the pods."""
    mounts: tuple[Mount, ...] = ()
    distributed: bool = True
    ports: tuple[int, ...] = ()
    readiness_path: str | None = None
    liveness_path: str | None = None
    revision: str | None = None
    """Revision of the spec the pods are made from (independent replicas; a label on each pod)."""
    secret_files: tuple[SecretFile, ...] = ()
    status_port: int | None = None
    """Port of the workload's progress endpoint (``GET /progress``), polled by the operator; None: not served."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    default_image: str = DEFAULT_IMAGE

    @property
    def world_size(self) -> int:
        return self.size * self.worker.processes_per_pod


def command(plan: GangPlan, rank: int) -> list[str]:
    config = f"{CONFIG_DIR}/{CONFIG_FILE}"
    procs = plan.worker.processes_per_pod
    if not plan.distributed or procs == 1:
        return ["python", "-m", plan.module, "--config", config]
    return [
        "torchrun",
        f"--nnodes={plan.size}",
        f"--nproc-per-node={procs}",
        f"--node-rank={rank}",
        f"--master-addr={master_addr(plan)}",
        f"--master-port={master_port(plan)}",
        "-m",
        plan.module,
        "--config",
        config,
    ]


def master_port(plan: GangPlan) -> int:
    """torch.distributed's rendezvous port: stable for an attempt, distinct across gangs (29500-30499), so gangs
    that share a network namespace (interp-local, hostNetwork pods) do not meet on one port."""
    base, span = RENDEZVOUS_PORTS
    key = f"{plan.owner.namespace}/{plan.owner.name}/{plan.attempt}".encode()
    return base + zlib.crc32(key) % span


def master_addr(plan: GangPlan) -> str:
    name = plan.owner.name
    return f"{naming.pod_name(name, plan.attempt, 0)}.{naming.service_name(name)}"


def env(plan: GangPlan, rank: int) -> list[dict[str, Any]]:
    procs = plan.worker.processes_per_pod
    values = {
        "INTERP_CONFIG": f"{CONFIG_DIR}/{CONFIG_FILE}",
        "INTERP_ATTEMPT": str(plan.attempt),
        "INTERP_LOG_FORMAT": "json",
        "HF_HOME": MODEL_CACHE_DIR if plan.worker.model_cache else POD_HF_HOME,
        "NNODES": str(plan.size),
        "NODE_RANK": str(rank),
        "NPROC_PER_NODE": str(procs),
        "WORLD_SIZE": str(plan.world_size),
        # Where the workload leaves its result for the operator (runtimes that relocate it rewrite this value).
        "INTERP_TERMINATION_MESSAGE_PATH": TERMINATION_MESSAGE_PATH,
        # The pod's annotations (profiling on demand), as a path that runtimes relocating mounts rewrite too.
        "INTERP_PODINFO_DIR": PODINFO_DIR,
    }
    if plan.status_port is not None:
        values["INTERP_STATUS_PORT"] = str(plan.status_port)
    if plan.distributed:
        values |= {"MASTER_ADDR": master_addr(plan), "MASTER_PORT": str(master_port(plan))}
        if procs == 1:  # torchrun sets these itself for several processes per pod
            values |= {"RANK": str(rank), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    # Each mount's path as env too: runtimes that relocate mounts (interp-local) rewrite env, not the config file.
    values |= {path_env(m.role): m.path for m in plan.mounts if m.storage.claim_name}
    values |= {secret.env: secret.path for secret in plan.secret_files}
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    out += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    return out + [_user_env(var) for var in plan.worker.env]


def path_env(role: str) -> str:
    """INTERP_PATH_<ROLE>: where the storage of a role is mounted (``saes/l3`` → INTERP_PATH_SAES_L3)."""
    return "INTERP_PATH_" + "".join(c if c.isalnum() else "_" for c in role.upper())


def _user_env(var: EnvVar) -> dict[str, Any]:
    if var.secret_key_ref is not None:
        ref = var.secret_key_ref
        return {"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    return {"name": var.name, "value": var.value}


def volumes_and_mounts(plan: GangPlan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": naming.config_map_name(plan.owner.name)}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        ]}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    for index, secret in enumerate(plan.secret_files):
        # Group-readable only: the pod's fsGroup owns the files, as the workload's user belongs to it.
        volumes.append({"name": f"secret-{index}", "secret": {
            "secretName": secret.secret_name, "items": [{"key": secret.key, "path": secret.key}],
            "defaultMode": 0o440}})
        mounts.append({"name": f"secret-{index}", "mountPath": f"{SECRETS_DIR}/{secret.role}", "readOnly": True})
    claims: dict[str, str] = {}
    for mount in plan.mounts:
        claim = mount.storage.claim_name
        if claim is None:  # URIs are read by the workload itself
            continue
        if claim not in claims:
            claims[claim] = f"pvc-{len(claims)}"
            volumes.append({"name": claims[claim], "persistentVolumeClaim": {"claimName": claim}})
        entry: dict[str, Any] = {"name": claims[claim], "mountPath": mount.path, "readOnly": mount.read_only}
        if mount.storage.sub_path:
            entry["subPath"] = mount.storage.sub_path
        mounts.append(entry)
    cache = plan.worker.model_cache
    if cache is not None:
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.claim_name}})
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE_DIR}
                      | ({"subPath": cache.sub_path} if cache.sub_path else {}))
    # The user's own, exactly as written (the models refuse names and paths that clash with those above).
    volumes += [v.model_dump(mode="json", by_alias=True, exclude_none=True) for v in plan.worker.volumes]
    mounts += [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in plan.worker.volume_mounts]
    return volumes, mounts


def _affinity(plan: GangPlan, rank: int) -> dict[str, Any] | None:
    """The user's affinity with the pin to the planned node ANDed into each required node term: node selector
    terms are ORed, so the pin must be in every one of them (with no terms, it is the only one)."""
    user = plan.worker.affinity
    affinity: dict[str, Any] = {}
    if user is not None:
        node_affinity = user.node_affinity.to_json_dict() if user.node_affinity else {}
        # Pod (anti-)affinity as written: an empty labelSelector there means "every pod", so nothing is pruned.
        passed = {"nodeAffinity": node_affinity, "podAffinity": user.pod_affinity,
                  "podAntiAffinity": user.pod_anti_affinity}
        affinity = {k: v for k, v in passed.items() if v}
    if plan.nodes:
        pin = {"key": "metadata.name", "operator": "In", "values": [plan.nodes[rank]]}
        node = affinity.setdefault("nodeAffinity", {})
        required = node.get("requiredDuringSchedulingIgnoredDuringExecution") or {"nodeSelectorTerms": [{}]}
        terms = [term | {"matchFields": [*term.get("matchFields", []), pin]} for term in required["nodeSelectorTerms"]]
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    return affinity or None


def hand_off(plan: GangPlan) -> tuple[dict[str, str], dict[str, str], str | None]:
    """Labels, annotations and schedulerName that hand the gang to an external gang scheduler."""
    group = f"{plan.owner.name}-{plan.attempt}"
    scheduler = plan.scheduling.gang_scheduler
    if scheduler == "volcano":
        return {}, {VOLCANO_GROUP_ANNOTATION: group}, VOLCANO_SCHEDULER
    if scheduler == "coscheduling":
        return {COSCHEDULING_GROUP_LABEL: group}, {}, COSCHEDULING_SCHEDULER
    if scheduler == "kueue":
        labels = {KUEUE_QUEUE_LABEL: str(plan.scheduling.queue_name), KUEUE_GROUP_LABEL: group}
        return labels, {KUEUE_GROUP_COUNT: str(plan.size)}, None
    return {}, {}, None


def pod(plan: GangPlan, rank: int) -> dict[str, Any]:
    owner, worker = plan.owner, plan.worker
    name = naming.pod_name(owner.name, plan.attempt, rank)
    extra_labels, extra_annotations, scheduler_name = hand_off(plan)
    if plan.revision is not None:
        extra_labels[naming.LABEL_REVISION] = plan.revision
    volumes, mounts = volumes_and_mounts(plan)
    container: dict[str, Any] = {
        "name": "workload",
        "image": worker.image or plan.default_image,
        "imagePullPolicy": worker.image_pull_policy,
        "command": command(plan, rank),
        "env": env(plan, rank),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # A crash without a message still tells `kubectl describe` why: the log's tail stands in.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    # Quantities as strings: the API's canonical form (and what the typed kubernetes client insists on).
    resources = {k: {name: str(q) for name, q in v.items()} for k, v in worker.resources.to_json_dict().items() if v}
    if resources:
        container["resources"] = resources
    ports = [{"name": f"port-{p}", "containerPort": p} for p in plan.ports]
    if plan.status_port is not None:
        ports.append({"name": STATUS_PORT_NAME, "containerPort": plan.status_port})
    if ports:
        container["ports"] = ports
    if plan.readiness_path and plan.ports:
        container["readinessProbe"] = {
            "httpGet": {"path": plan.readiness_path, "port": plan.ports[0]},
            "periodSeconds": 2,
            "failureThreshold": 3,
        }
    if plan.liveness_path and plan.ports:
        # Generous: a live server answers at once even while it loads or runs a long batch (the engine has its own
        # thread); only a hung process fails three times in a row.
        container["livenessProbe"] = {
            "httpGet": {"path": plan.liveness_path, "port": plan.ports[0]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": name,
        "subdomain": naming.service_name(owner.name),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    optional = {
        "affinity": _affinity(plan, rank),
        "nodeSelector": dict(worker.node_selector) or None,
        "tolerations": [t.to_json_dict() for t in worker.tolerations] or None,
        "priorityClassName": worker.priority_class_name,
        "runtimeClassName": worker.runtime_class_name,
        "imagePullSecrets": [{"name": s.name} for s in worker.image_pull_secrets] or None,
        "serviceAccountName": worker.service_account_name,
        "schedulerName": scheduler_name,
    }
    spec |= {k: v for k, v in optional.items() if v is not None}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            # The operator's labels and annotations last: its selectors and gang hand-offs must hold.
            "labels": dict(worker.pod_labels) | naming.pod_labels(owner.kind, owner.name, plan.attempt, rank)
            | extra_labels,
            "annotations": dict(worker.pod_annotations) | dict(plan.annotations) | extra_annotations,
            "ownerReferences": [owner.reference()],
        },
        "spec": spec,
    }


def pods(plan: GangPlan) -> list[dict[str, Any]]:
    return [pod(plan, rank) for rank in range(plan.size)]


def service(owner: Owner, headless: bool = True, ports: Sequence[int] = ()) -> dict[str, Any]:
    """Headless: stable DNS names for rendezvous (ready or not). Otherwise a ClusterIP in front of ready pods."""
    spec: dict[str, Any] = {"selector": naming.selector_labels(owner.kind, owner.name)}
    if headless:
        spec |= {"clusterIP": "None", "publishNotReadyAddresses": True}
    spec["ports"] = [{"name": f"port-{p}", "port": p, "targetPort": p} for p in (ports or (RENDEZVOUS_PORTS[0],))]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _owned(owner, naming.service_name(owner.name)),
            "spec": spec}


def config_map(owner: Owner, config: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _owned(owner, naming.config_map_name(owner.name)),
            "data": {CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True)}}


def _owned(owner: Owner, name: str) -> dict[str, Any]:
    """Metadata of an object the operator owns on behalf of ``owner`` (deleted with it)."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": naming.selector_labels(owner.kind, owner.name) | {naming.LABEL_MANAGED_BY: naming.MANAGER},
        "ownerReferences": [owner.reference()],
    }


def pod_group(plan: GangPlan) -> dict[str, Any] | None:
    """The PodGroup Volcano or scheduler-plugins coscheduling admits the gang through; None for other schedulers."""
    scheduler = plan.scheduling.gang_scheduler
    if scheduler not in ("volcano", "coscheduling"):
        return None
    group_spec: dict[str, Any] = {"minMember": plan.size}
    if scheduler == "volcano":
        api_version = "scheduling.volcano.sh/v1beta1"
        if plan.scheduling.queue_name:
            group_spec["queue"] = plan.scheduling.queue_name
    else:
        api_version = "scheduling.x-k8s.io/v1alpha1"
    return {
        "apiVersion": api_version,
        "kind": "PodGroup",
        "metadata": {
            "name": f"{plan.owner.name}-{plan.attempt}",
            "namespace": plan.owner.namespace,
            "labels": naming.selector_labels(plan.owner.kind, plan.owner.name),
            "ownerReferences": [plan.owner.reference()],
        },
        "spec": group_spec,
    }
