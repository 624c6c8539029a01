"""Prometheus metrics of the operator (served on --metrics-port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
