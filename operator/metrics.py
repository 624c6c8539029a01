"""Prometheus metrics of the operator (served on --metrics-port at /metrics)."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_SECONDS = Histogram(
    "interp_operator_reconcile_duration_seconds",
    "Time spent in one reconcile of a custom resource.",
    ["kind"],
)
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

_phases: dict[tuple[str, str, str], str] = {}
_seen: set[tuple[str, str]] = set()
_RESTART_REASONS = {"GangRestarting": "Gang", "PodRestarting": "Pod"}


def observe(kind: str, key: tuple[str, str, str], phase: str | None, decision: Any, pods_created: int = 0) -> None:
    """Account for one reconcile's decision and the pods it really created; ``phase`` None forgets the object."""
    if phase is None:
        _phases.pop(key, None)
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
