"""Prometheus metrics of the operator (served on --metrics-port at /metrics).

Two families: counters and histograms of the operator's own work (reconciles, pods created, restarts, placement
failures), and per-object series in the manner of kube-state-metrics (``interp_operator_object_*``, labelled kind,
namespace and name), read from the status each reconcile computes and dropped when the object goes.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Any, get_args

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import __version__
from .api import KINDS

RECONCILE_SECONDS = Histogram(
    "interp_operator_reconcile_duration_seconds",
    "Time spent in one reconcile of a custom resource.",
    ["kind"],
)
RECONCILES = Counter("interp_operator_reconcile_total", "Reconciles of a custom resource, by result (success, error).",
                     ["kind", "result"])
RECONCILE_ERRORS = Counter("interp_operator_reconcile_errors_total",
                           "Reconciles that raised (an API error, say); the object is retried soon.", ["kind"])
INVALID_SPECS = Counter(
    "interp_operator_invalid_specs_total",
    "Specs the operator rejected after the API server accepted them (schema older than the operator, say).",
    ["kind"],
)
GANGS = Gauge("interp_operator_gangs", "Objects by phase.", ["kind", "phase"])
RESTARTS = Counter("interp_operator_restarts_total", "Gang or pod restarts.", ["kind", "scope"])
PODS_CREATED = Counter("interp_operator_pods_created_total",
                       "Pods created for gangs (a create answered AlreadyExists is not counted).", ["kind"])
PLACEMENT_FAILURES = Counter(
    "interp_operator_placement_failures_total",
    "Times a gang found no room: once per object and wait, however many reconciles the wait lasts.", ["kind"]
)
BUILD_INFO = Gauge("interp_operator_build_info", "Always 1; the operator's version as a label.", ["version"])
BUILD_INFO.labels(__version__).set(1)

_phases: dict[tuple[str, str, str], str] = {}
_seen: set[tuple[str, str]] = set()
_RESTART_REASONS = {"GangRestarting": "Gang", "PodRestarting": "Pod"}


def observe(kind: str, key: tuple[str, str, str], phase: str | None, decision: Any, pods_created: int = 0) -> None:
    """Account for one reconcile's decision and the pods it really created; ``phase`` None forgets the object (its
    per-object series too: the object is gone, or no longer this operator's)."""
    if phase is None:
        _phases.pop(key, None)
        OBJECTS.forget(key)
    else:
        _phases[key] = phase
    if decision is not None:
        if pods_created:
            PODS_CREATED.labels(kind).inc(pods_created)
        for event in decision.events:
            if event.reason in _RESTART_REASONS:
                RESTARTS.labels(kind, _RESTART_REASONS[event.reason]).inc()
            if event.reason == "InsufficientCapacity":  # posted when PodsPlaced turns False: once per wait
                PLACEMENT_FAILURES.labels(kind).inc()
    counts = Tally(p for (_, k, _), p in _phases.items() if k == kind)
    _seen.update((kind, p) for p in counts)
    for seen_kind, seen_phase in _seen:
        if seen_kind == kind:
            GANGS.labels(kind, seen_phase).set(counts.get(seen_phase, 0))


def reconciled(kind: str, namespace: str, name: str, uid: str | None, status: Mapping[str, Any] | None) -> None:
    """One reconcile ended well; ``status`` (None when not known) is what the object's series show from now on."""
    RECONCILES.labels(kind, "success").inc()
    if status is not None:
        OBJECTS.set((namespace, kind, name), uid, status)


def reconcile_failed(kind: str) -> None:
    RECONCILES.labels(kind, "error").inc()
    RECONCILE_ERRORS.labels(kind).inc()


def _literal_values(status_model: Any, field: str) -> tuple[str, ...]:
    """The values a status field's Literal type allows (the field optional or not); () where there is no field."""
    info = status_model.model_fields.get(field)
    if info is None:
        return ()
    literal = next((t for t in (get_args(info.annotation) or (info.annotation,)) if get_args(t)), info.annotation)
    return tuple(str(v) for v in get_args(literal))


def _status_model(model: Any) -> Any:
    annotation = model.model_fields["status"].annotation
    return next(t for t in (get_args(annotation) or (annotation,)) if t is not type(None))


PHASES: dict[str, tuple[str, ...]] = {info.kind: _literal_values(_status_model(info.model), "phase") for info in KINDS}
STAGES: dict[str, tuple[str, ...]] = {info.kind: _literal_values(_status_model(info.model), "stage") for info in KINDS}
_OBJECT = ["kind", "namespace", "name"]
FORGOTTEN_UIDS = 4096
_CONDITION_STATUSES = ("True", "False", "Unknown")


class ObjectMetrics(Collector):
    """The latest status of every object, exposed at scrape time: nothing is left behind once an object is forgotten.

    Phases and stages are one-hot (every value of the kind, 1 for the current one) and conditions come as three
    series per type (status true, false, unknown), as kube-state-metrics does, so that alerts compare with ``== 1``.
    """

    def __init__(self) -> None:
        self._statuses: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        self._uids: dict[tuple[str, str, str], str | None] = {}
        self._gone: dict[tuple[tuple[str, str, str], str], None] = {}  # forgotten objects (key, uid), oldest first
        self._lock = threading.Lock()  # reconciles run in worker threads; scrapes in the HTTP server's

    def set(self, key: tuple[str, str, str], uid: str | None, status: Mapping[str, Any]) -> None:
        with self._lock:
            if uid is not None and (key, uid) in self._gone:
                return  # a reconcile that outlived its loop: the object is gone, its series must not come back
            self._statuses[key], self._uids[key] = dict(status), uid

    def forget(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._statuses.pop(key, None)
            uid = self._uids.pop(key, None)
            if uid is not None:
                self._gone[(key, uid)] = None
                while len(self._gone) > FORGOTTEN_UIDS:
                    del self._gone[next(iter(self._gone))]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str, help_: str, *extra: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"interp_operator_object_{name}", help_, labels=[*_OBJECT, *extra])

        phase = family("phase", "1 for the object's current status.phase, 0 for the kind's other phases.", "phase")
        stage = family("stage", "1 for the object's current status.stage, 0 for the kind's other stages (dumps and "
                       "training jobs).", "stage")
        condition = family("condition", "The object's status conditions: 1 on the series whose status matches.",
                           "condition", "status")
        progress = family("progress_ratio", "Tokens done / tokens to do, 0 to 1 (status.progress).")
        tokens_done = family("tokens_done", "Tokens processed (status.progress.tokensDone).")
        # Not *_total: Prometheus keeps that suffix for counters.
        tokens_expected = family("tokens_expected", "Tokens to process (status.progress.tokensTotal).")
        rate = family("tokens_per_second", "Recent throughput of the whole gang (status.progress.tokensPerSecond).")
        restarts = family("restarts", "Restarts so far (status.restarts: gang restarts of a training job, pod "
                          "restarts of a dump or a service).")
        replicas = family("replicas", "Pods of the object that exist (status.replicas).")
        ready = family("ready_replicas", "Pods of the object that are running and ready (status.readyReplicas).")
        with self._lock:
            statuses = list(self._statuses.items())
        for (namespace, kind, name), status in sorted(statuses):
            labels = [kind, namespace, name]
            for value in PHASES.get(kind, ()):
                phase.add_metric([*labels, value], float(status.get("phase") == value))
            if status.get("stage") is not None:
                for value in STAGES.get(kind, ()):
                    stage.add_metric([*labels, value], float(status.get("stage") == value))
            for entry in status.get("conditions") or ():
                for value in _CONDITION_STATUSES:
                    condition.add_metric([*labels, entry["type"], value.lower()], float(entry.get("status") == value))
            done = status.get("progress") or {}
            if done:
                total = done.get("tokensTotal") or 0
                ratio = done.get("tokensDone", 0) / total if total else done.get("percent", 0) / 100
                progress.add_metric(labels, min(max(ratio, 0.0), 1.0))
                tokens_done.add_metric(labels, done.get("tokensDone", 0))
                tokens_expected.add_metric(labels, total)
                if done.get("tokensPerSecond") is not None:
                    rate.add_metric(labels, done["tokensPerSecond"])
            restarts.add_metric(labels, status.get("restarts", 0))
            replicas.add_metric(labels, status.get("replicas", 0))
            ready.add_metric(labels, status.get("readyReplicas", 0))
        yield from (phase, stage, condition, progress, tokens_done, tokens_expected, rate, restarts, replicas, ready)


OBJECTS = ObjectMetrics()
REGISTRY.register(OBJECTS)
