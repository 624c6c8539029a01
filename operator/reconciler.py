"""One reconcile of one object: validate, decide (pure), write the status once, then create and delete.

The status is written *before* pods are created, so an operator that dies half-way through creating a gang finds the
attempt and its planned nodes on restart and completes the same gang (no duplicates, no orphans).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import metrics
from .admission import admission_status
from .api import Resource
from .conditions import set_condition
from .gang import builders, naming
from .gang.lifecycle import Decision, Event, Observed, decide
from .gang.placement import Placement, Unplaceable, place
from .gang.pods import PodState
from .kinds import Adapter
from .kinds.base import Hold
from .snapshot import Snapshot


class Writer(Protocol):
    def patch_status(self, info: Any, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...
    def create(self, obj: Mapping[str, Any]) -> bool: ...
    def create_all(self, objects: Iterable[Mapping[str, Any]]) -> int: ...
    def replace_config_map(self, obj: Mapping[str, Any]) -> None: ...
    def delete_pods(self, namespace: str, names: Iterable[str]) -> None: ...
    def annotate_pods(self, namespace: str, names: Iterable[str], annotations: Mapping[str, str | None]) -> None: ...
    def delete(self, info: Any, namespace: str, name: str) -> None: ...


@dataclass(frozen=True)
class OperatorConfig:
    default_image: str = builders.DEFAULT_IMAGE
    workload_modules: Mapping[str, str] = field(default_factory=dict)
    """Per-kind override of the workload module (bring-your-own workloads; the gang tests use it)."""
    progress_interval_s: float | None = None
    """How often a running object's pods are asked for their progress; None: the kind's own interval."""


@dataclass
class Result:
    requeue_after: float | None
    events: list[Event]
    decision: Decision | None = None
    status: Mapping[str, Any] | None = None
    """The status the object has after this reconcile (written, or unchanged); None when not known."""
    pods_created: int = 0
    """Pods this reconcile created (an AlreadyExists answer is no creation)."""


def reconcile(adapter: Adapter, body: Mapping[str, Any], snapshot: Snapshot, kube: Writer,
              config: OperatorConfig) -> Result:
    meta = body["metadata"]
    try:
        result = _reconcile(adapter, body, snapshot, kube, config)
    except Exception:
        metrics.reconcile_failed(adapter.info.kind)
        raise
    metrics.reconciled(adapter.info.kind, meta.get("namespace") or "", meta["name"], meta.get("uid"), result.status)
    return result


def _reconcile(adapter: Adapter, body: Mapping[str, Any], snapshot: Snapshot, kube: Writer,
               config: OperatorConfig) -> Result:
    info, meta = adapter.info, body["metadata"]
    stored = dict(body.get("status") or {})
    admitted = admission_status(info, dict(body), snapshot.now)
    if admitted["phase"] == "Failed" and stored.get("phase") not in ("Succeeded",):
        accepted = next(c for c in admitted["conditions"] if c["type"] == "Accepted")
        events = [] if stored.get("phase") == "Failed" else [Event("Warning", "InvalidSpec", accepted["message"])]
        failed = {**stored, **admitted}
        if failed != stored:
            kube.patch_status(info, meta["namespace"], meta["name"], failed)
        return Result(None, events, status=failed)
    obj = info.parse(dict(body))
    prepared = adapter.prepare(obj, snapshot)
    if isinstance(prepared, Hold):
        # A suspended object is Suspended whatever it waits on (Kueue creates jobs suspended before their data).
        if (not stored.get("attempt") and stored.get("phase") not in ("Succeeded", "Failed")
                and not adapter.run(obj).suspend):
            return _hold(info, meta, stored, admitted, prepared, snapshot, kube)
    else:
        obj = prepared
    policy = adapter.policy(obj)

    def plan(low: int, high: int) -> Placement | Unplaceable:
        if not policy.builtin_scheduler:
            return Placement(policy.size, ())
        request = dataclasses.replace(adapter.gang_request(obj), min_size=low, max_size=high)
        return place(request, snapshot.nodes, snapshot.used)

    ready_nodes = frozenset(n.name for n in snapshot.nodes if n.ready)
    observed = Observed({**stored, **admitted}, meta.get("generation"), snapshot.pods, ready_nodes, snapshot.now)
    decision = decide(policy, observed, plan)
    status = adapter.present_status(obj, decision.status, snapshot)
    if status != stored:
        kube.patch_status(info, meta["namespace"], meta["name"], status_patch(stored, status))
    revision = policy.rollout.revision if policy.rollout is not None else None
    created = _create(adapter, obj, body, decision, config, kube, revision) if decision.create is not None else 0
    if decision.delete:
        kube.delete_pods(meta["namespace"], decision.delete)
    _propagate_profile(meta, snapshot.pods, decision, kube)
    if decision.delete_object:
        kube.delete(info, meta["namespace"], meta["name"])
    requeue = decision.requeue_after
    if adapter.status_port is not None and status.get("phase") == "Running":  # keep the progress flowing
        every = config.progress_interval_s or adapter.progress_interval_s
        requeue = min(requeue, every) if requeue is not None else every
    return Result(requeue, decision.events, decision, status, created)


def _hold(info: Any, meta: Mapping[str, Any], stored: Mapping[str, Any], admitted: Mapping[str, Any], hold: Hold,
          snapshot: Snapshot, kube: Writer) -> Result:
    """The first gang waits on another object: Pending, with the hold's condition saying on what."""
    previous: Mapping[str, Any] = next((c for c in stored.get("conditions", []) if c.get("type") == hold.condition), {})
    status = {**stored, **admitted, "phase": "Pending", "observedGeneration": meta.get("generation")}
    now = snapshot.now.replace(tzinfo=None)
    conditions = list(status.get("conditions", []))
    if any(c.get("type") == "Suspended" and c.get("status") == "True" for c in conditions):
        conditions = set_condition(conditions, "Suspended", "False", "Resumed", "runPolicy.suspend was cleared",
                                   meta.get("generation"), now)
    status["conditions"] = set_condition(conditions, hold.condition, "False", hold.reason, hold.message,
                                         meta.get("generation"), now)
    if status != stored:
        kube.patch_status(info, meta["namespace"], meta["name"], status_patch(stored, status))
    events = [] if previous.get("reason") == hold.reason else [Event("Normal", hold.reason, hold.message)]
    return Result(hold.retry_s, events, status=status)


def status_patch(stored: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``stored`` into ``status``: all of ``status``, and null for every key (at
    any depth of nested objects) that ``status`` no longer has, so that dropped fields are removed, not kept."""
    patch: dict[str, Any] = {key: None for key in stored if key not in status}
    for key, value in status.items():
        old = stored.get(key)
        patch[key] = status_patch(old, value) if isinstance(value, Mapping) and isinstance(old, Mapping) else value
    return patch


def _create(adapter: Adapter, obj: Resource, body: Mapping[str, Any], decision: Decision,
            config: OperatorConfig, kube: Writer, revision: str | None) -> int:
    """Create the decided pods (and the gang's Service, ConfigMap, PodGroup); returns how many pods were new."""
    create = decision.create
    assert create is not None
    owner = builders.Owner.from_body(body)
    profile = (body["metadata"].get("annotations") or {}).get(naming.PROFILE_ANNOTATION)
    gang = builders.GangPlan(
        owner=owner,
        worker=adapter.worker(obj),
        scheduling=adapter.scheduling(obj),
        module=config.workload_modules.get(adapter.info.kind, adapter.module),
        attempt=create.attempt,
        size=create.size,
        nodes=create.nodes,
        mounts=adapter.mounts(obj),
        distributed=adapter.distributed,
        ports=adapter.ports(obj),
        readiness_path=adapter.readiness_path,
        liveness_path=adapter.liveness_path,
        revision=revision,
        secret_files=adapter.secret_files(obj),
        status_port=adapter.status_port,
        annotations={naming.PROFILE_ANNOTATION: profile} if profile else {},
        default_image=config.default_image,
    )
    kube.replace_config_map(builders.config_map(owner, adapter.config(obj, create.size, create.attempt)))
    kube.create(builders.service(owner, headless=adapter.headless_service, ports=adapter.ports(obj)))
    group = builders.pod_group(gang)
    if group is not None:
        kube.create(group)
    return kube.create_all(builders.pod(gang, rank) for rank in create.ranks)


def _propagate_profile(meta: Mapping[str, Any], pods: Iterable[PodState], decision: Decision, kube: Writer) -> None:
    """Profiling on demand: the CR's profile annotation reaches running pods (a downwardAPI file) without restart."""
    wanted = (meta.get("annotations") or {}).get(naming.PROFILE_ANNOTATION)
    stale = [p.name for p in pods if p.profile != wanted and not p.finished and p.name not in decision.delete]
    if stale:
        kube.annotate_pods(meta["namespace"], stale, {naming.PROFILE_ANNOTATION: wanted})
