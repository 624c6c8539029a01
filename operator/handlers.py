"""kopf wiring: watch-cache indexes, one reconcile loop per object, wake-ups on pod and object events.

Each custom resource gets a kopf daemon that reconciles it whenever its pods or the object change (and after the delay
a decision asks for), so reconciles of one object never overlap. Reads come from kopf indexes fed by watches — a
reconcile makes no list calls — and, for kinds whose pods serve progress, from the pods' status endpoints
(``progress.ProgressBoard``, polled just before each reconcile); the only writes are the status patch and the gang's
objects.

The daemons hold no finalizer: the gang's objects carry owner references, so the garbage collector removes them with
the custom resource, and an object can be deleted while no operator runs (after ``helm uninstall``, say). A daemon
learns of its object's deletion from the watch instead, and stops. kopf's own finalizer, which earlier versions left
on every object, is removed by kopf the first time it sees such an object.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from . import logs, metrics
from .api import GROUP, VERSION
from .conditions import set_condition
from .events import Recorder
from .gang import naming
from .gang.lifecycle import Event
from .gang.placement import NodeInfo
from .gang.pods import PodState
from .kinds import ADAPTERS, Adapter
from .kube import Kube, api_client
from .metrics import INVALID_SPECS, RECONCILE_SECONDS
from .progress import ProgressBoard
from .quantity import ResourceMap, add, parse_resources
from .reconciler import OperatorConfig, Snapshot, reconcile

# Explicit timeouts: without them a silently dropped watch connection leaves the operator deaf until restarted.
WATCH_SERVER_TIMEOUT_S = 120
WATCH_CLIENT_TIMEOUT_S = 150
REQUEST_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10
RESYNC_S = 60.0
MANAGED = {naming.LABEL_MANAGED_BY: naming.MANAGER}

OwnerKey = tuple[str, str, str]
_state: dict[str, Any] = {}
ERROR_RETRY_S = 5.0
ERROR_MESSAGE_CHARS = 1024


@dataclasses.dataclass
class Loop:
    """One object's reconcile loop, as the watch handlers see it: what wakes it, and whether its object is gone."""

    key: OwnerKey
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    deleted: bool = False


_loops: dict[str, Loop] = {}
"""By the object's uid: an object deleted and created again under its name gets a loop of its own."""


def operator_config() -> OperatorConfig:
    """From the environment (the chart and the CLI set it): INTERP_WORKLOAD_IMAGE, INTERP_WORKLOAD_MODULES,
    INTERP_PROGRESS_INTERVAL_S."""
    modules = {}
    for item in filter(None, os.environ.get("INTERP_WORKLOAD_MODULES", "").split(",")):
        kind, _, module = item.partition("=")
        if kind not in ADAPTERS or not module:
            raise ValueError(f"INTERP_WORKLOAD_MODULES: expected KIND=module with KIND in {sorted(ADAPTERS)}: {item!r}")
        modules[kind] = module
    image = os.environ.get("INTERP_WORKLOAD_IMAGE") or OperatorConfig().default_image
    raw = os.environ.get("INTERP_PROGRESS_INTERVAL_S", "").strip()
    try:
        interval = float(raw) if raw else None
    except ValueError:
        interval = -1.0
    if interval is not None and not 0 < interval <= 3600:
        raise ValueError(f"INTERP_PROGRESS_INTERVAL_S: expected seconds in (0, 3600], got {raw!r}")
    return OperatorConfig(default_image=image, workload_modules=modules, progress_interval_s=interval)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.watching.connect_timeout = CONNECT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.networking.connect_timeout = CONNECT_TIMEOUT_S
    # kopf's bookkeeping goes to annotations: the status schema is closed, so a status.kopf field would be pruned.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events are posted deliberately (one per transition), not for every log line of a handler.
    settings.posting.level = logging.WARNING
    logging.getLogger("kopf.objects").addFilter(_quiet_watch_handlers)
    _state["config"] = operator_config()
    _state["kube"] = Kube(api_client())
    _state["recorder"] = Recorder(_state["kube"])


def _quiet_watch_handlers(record: logging.LogRecord) -> bool:
    """Drop kopf's "Handler 'x' succeeded" line for the wake-up handlers: one per pod or node event is noise."""
    message = record.getMessage()
    return not (message.startswith("Handler '") and message.endswith("' succeeded.")
                and any(name in message for name in ("pod_changed", "node_changed", "object_changed",
                                                     "dump_changed")))


def _owner_key(namespace: str | None, labels: Any) -> OwnerKey | None:
    kind, name = labels.get(naming.LABEL_KIND), labels.get(naming.LABEL_NAME)
    return (namespace or "", kind, name) if kind and name else None


@kopf.index("v1", "pods", labels=MANAGED)
def gang_pods(namespace: str | None, labels: Any, body: kopf.Body, **_: Any) -> dict[OwnerKey, PodState] | None:
    key = _owner_key(namespace, labels)
    return {key: PodState.from_api(body)} if key else None


def _requests(spec: Any) -> ResourceMap:
    total: ResourceMap = {}
    for container in spec.get("containers", []):
        resources = container.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        total = add(total, parse_resources(limits) | parse_resources(requests))
    return total


def _planned_node(spec: Any) -> str | None:
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for field in term.get("matchFields", []):
            if field.get("key") == "metadata.name" and len(field.get("values", [])) == 1:
                return str(field["values"][0])
    return None


@kopf.index("v1", "pods")
def node_usage(namespace: str | None, labels: Any, spec: Any, status: Any, **_: Any) -> dict:
    """Resources held per node: bound pods, and pods of planned gangs not yet bound (their reservation).

    A pod that holds nothing maps to ``{}``, not None: kopf keeps an object's previous entries when the function
    returns None, so a finished pod would go on holding its node's resources."""
    if status.get("phase") in ("Succeeded", "Failed"):
        return {}
    node = spec.get("nodeName") or _planned_node(spec)
    return {node: (_owner_key(namespace, labels), _requests(spec))} if node else {}


@kopf.index("v1", "nodes")
def cluster_nodes(body: kopf.Body, **_: Any) -> dict[str, NodeInfo]:
    return {"nodes": NodeInfo.from_api(body)}


@kopf.index(GROUP, VERSION, "activationdumps")
def activation_dumps(namespace: str | None, name: str, spec: Any, status: Any, **_: Any) -> dict:
    """What jobs that read a dump need of it (its output and phase), for ``Snapshot.related``."""
    return {(namespace or "", name): {"spec": {"output": dict(spec.get("output") or {})},
                                      "status": {"phase": status.get("phase"),
                                                 "conditions": list(status.get("conditions") or [])}}}


@kopf.on.event(GROUP, VERSION, "activationdumps")
def dump_changed(namespace: str | None, **_: Any) -> None:
    """A dump's phase decides whether the jobs that read it may start: wake those of its namespace."""
    for loop in list(_loops.values()):
        key_namespace, kind, _name = loop.key
        if key_namespace == (namespace or "") and ADAPTERS[kind].references is not Adapter.references:
            loop.wake.set()


def _related(adapter: Adapter, body: kopf.Body, namespace: str, indexes: dict[str, kopf.Index]) -> dict:
    related: dict[tuple[str, str], Any] = {}
    for kind, name in adapter.references(body):
        index = indexes.get(kind)
        found = list(index.get((namespace, name), ())) if index is not None else []
        related[(kind, name)] = found[0] if found else None
    return related


class OwnWrites:
    """What this loop wrote that its watch caches may not show yet, laid over the next reconcile's inputs.

    The body and the pod index come from watches that lag behind this loop's own writes: a reconcile woken by a pod
    event right after the last one would otherwise see an old status and a pod it deleted still live, and count one
    failure twice or post a transition's event again. Only this loop writes the status, so a body whose status is
    one this loop has since replaced (the one a write was computed from, or an earlier write of its own) is stale:
    the latest written status is laid over it. A deleted pod counts as deleting until the index shows it deleting
    or gone."""

    KEPT = 16
    """Superseded statuses remembered (a watch lags by a few writes at most)."""

    def __init__(self) -> None:
        self.latest: Any = None
        self.superseded: list[Any] = []
        self.deleted: set[str] = set()

    def body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        current = dict(body)
        stored = current.get("status") or {}
        if self.latest is not None:
            if stored == self.latest:
                self.superseded.clear()  # caught up
            elif stored in self.superseded:
                current["status"] = self.latest
        return current

    def pods(self, pods: Iterable[PodState]) -> tuple[PodState, ...]:
        pods = tuple(pods)
        self.deleted &= {p.name for p in pods if not p.deleting}
        return tuple(dataclasses.replace(p, deleting=True) if p.name in self.deleted else p for p in pods)

    def remember(self, body: Mapping[str, Any], status: Any, deleted: Iterable[str]) -> None:
        """``body``: what the reconcile read (with this loop's writes laid over it); ``status``: what it left."""
        before = body.get("status") or {}
        if status is not None and status != before:
            for old in (before, self.latest):
                if old is not None and old not in self.superseded:
                    self.superseded.append(old)
            del self.superseded[:-self.KEPT]
            self.latest = status
        self.deleted |= set(deleted)


def _wake(key: OwnerKey | None) -> None:
    for loop in list(_loops.values()):
        if loop.key == key:
            loop.wake.set()


@kopf.on.event("v1", "pods", labels=MANAGED)
def pod_changed(namespace: str | None, labels: Any, **_: Any) -> None:
    _wake(_owner_key(namespace, labels))


_node_digests: dict[str, tuple] = {}


@kopf.on.event("v1", "nodes")
def node_changed(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
    """Wake every gang when a node's schedulability changes; heartbeats (most node updates) change nothing."""
    info = NodeInfo.from_api(body)
    digest = (type == "DELETED", info.ready, info.unschedulable, sorted(info.labels.items()), info.taints,
              sorted(info.allocatable.items()))
    if _node_digests.get(name) == digest:
        return
    _node_digests[name] = digest
    for loop in list(_loops.values()):
        loop.wake.set()


def _usage_without(key: OwnerKey, node_usage: kopf.Index) -> dict[str, ResourceMap]:
    used: dict[str, ResourceMap] = defaultdict(dict)
    for node, entries in node_usage.items():
        for owner, requests in entries:
            if owner != key:
                used[node] = add(used[node], requests)
    return used


def _error_text(err: Exception) -> str:
    """One line for a condition: an API error's status, reason and the API's own message (which names what is wrong,
    e.g. a missing PriorityClass), not its str(), which carries headers and the whole body."""
    if isinstance(err, ApiException):
        text = f"API error {err.status} {err.reason}"
        detail = _api_message(err.body)
        if detail:
            text = f"{text}: {detail}"
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return text[:ERROR_MESSAGE_CHARS]


def _api_message(body: Any) -> str:
    """The message of a Kubernetes Status body, or "" for a body that is not one."""
    try:
        status = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return " ".join(message.split()) if isinstance(message, str) else ""


def _reconciled_condition(body: Mapping[str, Any], status: Mapping[str, Any], ok: bool,
                          message: str) -> list[dict[str, Any]]:
    reason = "Reconciled" if ok else "ReconcileError"
    return set_condition(list(status.get("conditions") or []), "Reconciled", "True" if ok else "False", reason,
                         message, body["metadata"].get("generation"), datetime.now(UTC).replace(tzinfo=None))


def _failing(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Reconciled" and c.get("status") == "False" for c in status.get("conditions") or [])


def _still_exists(info: Any, namespace: str, name: str, uid: str | None) -> bool:
    """Whether the object this loop reconciles is still there (not gone, nor replaced by one of the same name)."""
    try:
        found = _state["kube"].get(info, namespace, name)
    except Exception:  # the API is unreachable (or the operator not configured yet): assume it is, and retry
        return True
    return found is not None and found["metadata"].get("uid") == uid


def _register(adapter: Adapter) -> None:
    info = adapter.info

    @kopf.on.event(GROUP, VERSION, info.plural)
    def object_changed(namespace: str | None, name: str, uid: str | None, type: str | None, **_: Any) -> None:
        loop = _loops.get(uid or "")
        if type == "DELETED" and loop is not None:
            loop.deleted = True  # no finalizer holds the object: its loop stops on the watch's word
        _wake((namespace or "", info.kind, name))

    async def run_gang(
        body: kopf.Body, namespace: str | None, name: str, uid: str | None, stopped: kopf.DaemonStopped,
        gang_pods: kopf.Index, node_usage: kopf.Index, cluster_nodes: kopf.Index, activation_dumps: kopf.Index,
        **_: Any,
    ) -> None:
        key: OwnerKey = (namespace or "", info.kind, name)
        loop = _loops[uid or ""] = Loop(key)
        board = ProgressBoard(adapter.status_port) if adapter.status_port is not None else None
        logs.bind(namespace=namespace, job=name, kind=info.kind)
        own = OwnWrites()
        decisions = logs.get_logger("interp_operator.decisions")

        async def reconcile_once() -> float:
            reports = await board.refresh(gang_pods.get(key, ())) if board is not None else {}
            current = own.body(body)
            snapshot = Snapshot(
                pods=own.pods(gang_pods.get(key, ())),
                nodes=tuple(cluster_nodes.get("nodes", ())),
                used=_usage_without(key, node_usage),
                now=datetime.now(UTC),
                reports=reports,
                related=_related(adapter, body, namespace or "", {"ActivationDump": activation_dumps}),
            )
            with RECONCILE_SECONDS.labels(info.kind).time():
                result = await asyncio.to_thread(reconcile, adapter, current, snapshot, _state["kube"],
                                                 _state["config"])
            status = result.status
            if status is not None and _failing(status):  # recovered: say so once
                status = {**status, "conditions": _reconciled_condition(body, status, True, "reconciled again")}
                await asyncio.to_thread(_state["kube"].patch_status, info, namespace, name,
                                        {"conditions": status["conditions"]})
            own.remember(current, status, result.decision.delete if result.decision else ())
            metrics.observe(info.kind, key, (result.decision.status if result.decision else
                                             dict(current.get("status") or {})).get("phase"),
                            result.decision, result.pods_created)
            for event in result.events:
                # Every decision (placement, restart, failure, success) is an event: log each with the object.
                decisions.log(logging.WARNING if event.type == "Warning" else logging.INFO, event.reason,
                              message=event.message)
                if event.reason == "InvalidSpec":
                    INVALID_SPECS.labels(info.kind).inc()
                await record(event)
            return result.requeue_after or RESYNC_S

        async def record(event: Event) -> None:
            try:
                await asyncio.to_thread(_state["recorder"].record, body, event)
            except Exception:  # an event is worth a log line, not the loop
                logs.get_logger(__name__).warning("event not posted", reason=event.reason, exc_info=True)

        async def report_failure(err: Exception) -> None:
            """The error as the object's Reconciled=False condition and a Warning event, where the API allows."""
            current = own.body(body)
            stored = dict(current.get("status") or {})
            message = f"{_error_text(err)}; retrying in {ERROR_RETRY_S:g}s"
            conditions = _reconciled_condition(body, stored, False, message)
            if conditions == stored.get("conditions"):
                return  # the same error again: already reported
            try:
                await asyncio.to_thread(_state["kube"].patch_status, info, namespace, name, {"conditions": conditions})
            except Exception:
                logs.get_logger(__name__).warning("the reconcile error could not be reported", exc_info=True)
                return
            own.remember(current, {**stored, "conditions": conditions}, ())
            await record(Event("Warning", "ReconcileError", message))

        try:
            while not stopped and not loop.deleted:
                loop.wake.clear()
                try:
                    delay = await reconcile_once()
                except Exception as err:  # never a dead loop, nor kopf's minute-long retry: report, retry soon
                    logs.get_logger(__name__).exception("reconcile failed; retrying", retry_in_s=ERROR_RETRY_S)
                    if not await asyncio.to_thread(_still_exists, info, namespace or "", name, uid):
                        loop.deleted = True  # its DELETED event came before this loop was registered, or was missed
                        break
                    await report_failure(err)
                    await asyncio.sleep(ERROR_RETRY_S)  # not woken early: the report itself is an event on the object
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(loop.wake.wait(), delay)
            if loop.deleted:
                logs.get_logger(__name__).info("object deleted: its reconcile loop stops")
        finally:
            if _loops.get(uid or "") is loop:
                del _loops[uid or ""]
            metrics.observe(info.kind, key, None, None)

    # kopf's DaemonFn protocol does not know the index keyword arguments kopf passes.
    daemon = kopf.daemon(GROUP, VERSION, info.plural, id="gang", cancellation_timeout=10.0, backoff=ERROR_RETRY_S)
    daemon(run_gang)  # type: ignore[arg-type]
    _without_finalizer(run_gang)


def _without_finalizer(fn: Any) -> None:
    """kopf gives every daemon a finalizer, to stop it before its object goes. These daemons stop on the watch's
    DELETED event instead, and the gang's objects go with their owner: no finalizer must outlive the operator."""
    spawning = kopf.get_default_registry()._spawning
    spawning._handlers = [dataclasses.replace(h, requires_finalizer=False) if h.fn is fn else h
                          for h in spawning._handlers]


for _adapter in ADAPTERS.values():
    _register(_adapter)
