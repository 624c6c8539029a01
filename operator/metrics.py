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
PODS_CREATED = Counter("interp_operator_pods_created_total", "Pods created for gangs.", ["kind"])
PLACEMENT_FAILURES = Counter(
    "interp_operator_placement_failures_total", "Reconciles that found no room for a gang.", ["kind"]
)

_phases: dict[tuple[str, str, str], str] = {}
_seen: set[tuple[str, str]] = set()
_RESTART_REASONS = {"GangRestarting": "Gang", "PodRestarting": "Pod"}


def observe(kind: str, key: tuple[str, str, str], phase: str | None, decision: Any) -> None:
    """Account for one reconcile's decision; ``phase`` None forgets the object (deleted)."""
    if phase is None:
        _phases.pop(key, None)
    else:
        _phases[key] = phase
    if decision is not None:
        if decision.create is not None:
            PODS_CREATED.labels(kind).inc(len(decision.create.ranks))
        for event in decision.events:
            if event.reason in _RESTART_REASONS:
                RESTARTS.labels(kind, _RESTART_REASONS[event.reason]).inc()
        if any(c.get("type") == "PodsPlaced" and c.get("status") == "False"
               for c in decision.status.get("conditions", [])) and decision.create is None:
            PLACEMENT_FAILURES.labels(kind).inc()
    counts = Tally(p for (_, k, _), p in _phases.items() if k == kind)
    _seen.update((kind, p) for p in counts)
    for seen_kind, seen_phase in _seen:
        if seen_kind == kind:
            GANGS.labels(kind, seen_phase).set(counts.get(seen_phase, 0))
