from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from interp_operator import __version__, metrics
from interp_operator.gang.lifecycle import Create, Decision, Event
from interp_operator.gang.placement import NodeInfo
from interp_operator.gang.pods import PodState
from interp_operator.kinds import ADAPTERS
from interp_operator.local.patch import merge_patch
from interp_operator.quantity import parse_resources
from interp_operator.reconciler import OperatorConfig, Snapshot, reconcile

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODES = tuple(NodeInfo(f"node-{i}", {}, parse_resources({"cpu": 64, "memory": "512Gi", "nvidia.com/gpu": 8}))
              for i in range(8))


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


class FakeKube:
    """Keeps the status as the API server's merge patches leave it, and the pods created."""

    def __init__(self) -> None:
        self.status: dict = {}
        self.pods: dict[str, dict] = {}

    def patch_status(self, info, namespace, name, status):
        self.status = merge_patch(self.status, copy.deepcopy(dict(status)))

    def create(self, obj):
        if obj["kind"] == "Pod":
            self.pods[obj["metadata"]["name"]] = obj
        return True

    def create_all(self, objects):
        return sum(self.create(o) for o in objects)

    def replace_config_map(self, obj): ...
    def delete_pods(self, namespace, names): ...
    def annotate_pods(self, namespace, names, annotations): ...
    def delete(self, info, namespace, name): ...

    def running(self) -> tuple[PodState, ...]:
        """The pods created so far as the watch shows them once they run, an IP each."""
        states = [PodState.from_api(o) for o in self.pods.values()]
        return tuple(PodState(p.name, p.attempt, p.rank, "Running", ready=True, node=f"node-{p.rank}",
                              ip=f"10.1.0.{p.rank}") for p in states)


def example(name: str, **spec) -> dict:
    body = yaml.safe_load((EXAMPLES / name).read_text())
    body["metadata"] |= {"uid": "uid-1", "generation": 1}
    body["spec"].update(spec)
    return body


def run(body: dict, kube: FakeKube, pods=(), reports=None):
    adapter = ADAPTERS[body["kind"]]
    snapshot = Snapshot(tuple(pods), NODES, {}, datetime(2026, 11, 24, 12, 0, tzinfo=UTC), reports or {}, {})
    return reconcile(adapter, {**body, "status": kube.status}, snapshot, kube, OperatorConfig(default_image="img:1"))


def exposed(**match: str) -> dict[str, dict[tuple, float]]:
    """Every sample the operator's /metrics would show now (parsed by prometheus_client's own parser) whose labels
    include ``match``, by metric name."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if match.items() <= sample.labels.items():
                rest = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in match))
                samples.setdefault(sample.name, {})[rest] = sample.value
    return samples


def test_per_object_series_follow_the_reconciled_status_and_go_with_the_object():
    kube = FakeKube()
    body = example("activationdump.yaml")
    body["metadata"]["name"] = "metrics-dump"
    run(body, kube)
    running = kube.running()
    report = {"stage": "extract", "shardsDone": 3, "shardsTotal": 10, "tokensDone": 300, "tokensTotal": 1000,
              "bytesWritten": 3000, "tokensPerSecond": 35.0}
    run(body, kube, pods=running, reports={p.name: report for p in running})
    assert kube.status["phase"] == "Running"
    mine = {"kind": "ActivationDump", "namespace": "interp", "name": "metrics-dump"}
    series = exposed(**mine)
    assert series["interp_operator_object_phase"] == {
        (("phase", "Pending"),): 0, (("phase", "Running"),): 1, (("phase", "Restarting"),): 0,
        (("phase", "Succeeded"),): 0, (("phase", "Failed"),): 0, (("phase", "Suspended"),): 0}
    assert series["interp_operator_object_stage"][(("stage", "extract"),)] == 1
    assert sum(series["interp_operator_object_stage"].values()) == 1
    assert series["interp_operator_object_progress_ratio"] == {(): 0.3}
    assert series["interp_operator_object_tokens_done"] == {(): 300}
    assert series["interp_operator_object_tokens_expected"] == {(): 1000}
    assert series["interp_operator_object_tokens_per_second"] == {(): 35.0 * len(running)}
    assert series["interp_operator_object_restarts"] == {(): 0}
    assert series["interp_operator_object_replicas"] == {(): kube.status["replicas"]}
    assert series["interp_operator_object_ready_replicas"] == {(): kube.status["readyReplicas"]}
    conditions = {dict(k)["condition"]: dict(k)["status"] for k, v in series["interp_operator_object_condition"].items()
                  if v == 1}
    assert conditions == {c["type"]: c["status"].lower() for c in kube.status["conditions"]}

    metrics.observe("ActivationDump", ("interp", "ActivationDump", "metrics-dump"), None, None)  # the object is gone
    assert exposed(**mine) == {}
    run(body, kube, pods=running)  # a reconcile that was still running when its loop ended
    assert exposed(**mine) == {}
    body["metadata"]["uid"] = "uid-2"  # an object of the same name, created again
    run(body, FakeKube())
    assert exposed(**mine)["interp_operator_object_phase"][(("phase", "Pending"),)] == 1


def test_an_invalid_spec_shows_as_failed_with_its_condition():
    kube = FakeKube()
    body = example("saetrainingjob.yaml", saes=[{"name": "a", "hookPoint": "x", "dictSize": 4, "k": 4}])
    body["metadata"]["name"] = "metrics-invalid"
    run(body, kube)
    series = exposed(kind="SAETrainingJob", name="metrics-invalid")
    failed = {dict(k)["phase"] for k, v in series["interp_operator_object_phase"].items() if v == 1}
    assert failed == {"Failed"}
    accepted = {dict(k)["status"]: v for k, v in series["interp_operator_object_condition"].items()
                if dict(k)["condition"] == "Accepted"}
    assert accepted == {"true": 0, "false": 1, "unknown": 0}


class BrokenKube(FakeKube):
    def patch_status(self, info, namespace, name, status):
        raise RuntimeError("API server unavailable")


def test_reconcile_errors_and_successes_are_counted():
    errors = value("interp_operator_reconcile_errors_total", kind="ActivationDump")
    failed = value("interp_operator_reconcile_total", kind="ActivationDump", result="error")
    succeeded = value("interp_operator_reconcile_total", kind="ActivationDump", result="success")
    body = example("activationdump.yaml")
    with pytest.raises(RuntimeError, match="unavailable"):
        run(body, BrokenKube())
    assert value("interp_operator_reconcile_errors_total", kind="ActivationDump") == errors + 1
    assert value("interp_operator_reconcile_total", kind="ActivationDump", result="error") == failed + 1
    run(body, FakeKube())
    assert value("interp_operator_reconcile_total", kind="ActivationDump", result="success") == succeeded + 1


def test_build_info_names_the_version():
    assert value("interp_operator_build_info", version=__version__) == 1
