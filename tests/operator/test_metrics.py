from __future__ import annotations

from prometheus_client import REGISTRY

from interp_operator import metrics
from interp_operator.gang.lifecycle import Create, Decision, Event


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_phases_restarts_pods_and_placement_failures():
    kind = "MetricsTestKind"
    created = Decision(status={"phase": "Pending"}, create=Create(1, (0, 1, 2), 3, ()))
    metrics.observe(kind, ("ns", kind, "a"), "Pending", created, pods_created=3)
    metrics.observe(kind, ("ns", kind, "a"), "Pending", created, pods_created=0)  # every create got 409
    metrics.observe(kind, ("ns", kind, "b"), "Running", Decision(status={"phase": "Running"}))
    assert value("interp_operator_gangs", kind=kind, phase="Pending") == 1
    assert value("interp_operator_pods_created_total", kind=kind) == 3
    restarting = Decision(status={"phase": "Restarting"}, events=[Event("Warning", "GangRestarting", "x")])
    metrics.observe(kind, ("ns", kind, "b"), "Restarting", restarting)
    assert value("interp_operator_restarts_total", kind=kind, scope="Gang") == 1
    assert value("interp_operator_gangs", kind=kind, phase="Running") == 0
    waiting = {"phase": "Pending", "conditions": [{"type": "PodsPlaced", "status": "False"}]}
    unplaced = Decision(status=waiting, events=[Event("Warning", "InsufficientCapacity", "x")])
    metrics.observe(kind, ("ns", kind, "c"), "Pending", unplaced)
    for _ in range(3):  # the same wait, reconciled again: no new event, no new count
        metrics.observe(kind, ("ns", kind, "c"), "Pending", Decision(status=waiting))
    assert value("interp_operator_placement_failures_total", kind=kind) == 1
    metrics.observe(kind, ("ns", kind, "a"), None, None)
    assert value("interp_operator_gangs", kind=kind, phase="Pending") == 1
