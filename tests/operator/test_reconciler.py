"""reconcile() against a recording fake of the API module: order of writes, crash safety, kind adapters."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from interp_operator.gang import naming
from interp_operator.gang.placement import NodeInfo
from interp_operator.gang.pods import PodState
from interp_operator.kinds import ADAPTERS
from interp_operator.quantity import parse_resources
from interp_operator.reconciler import OperatorConfig, Snapshot, reconcile

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class FakeKube:
    """Records every write; ``fail_after_pods`` simulates the operator dying in the middle of creating a gang."""

    def __init__(self, fail_after_pods: int | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.objects: dict[tuple[str, str], dict] = {}
        self.status: dict = {}
        self.fail_after_pods = fail_after_pods

    def patch_status(self, info, namespace, name, status):
        self.calls.append(("status", status.get("phase")))
        self.status = copy.deepcopy(dict(status))

    def create(self, obj):
        key = (obj["kind"], obj["metadata"]["name"])
        pods = sum(1 for k in self.objects if k[0] == "Pod")
        if obj["kind"] == "Pod" and self.fail_after_pods is not None and pods >= self.fail_after_pods:
            raise RuntimeError("operator killed")
        self.calls.append(("create", f"{key[0]}/{key[1]}"))
        new = key not in self.objects
        self.objects.setdefault(key, copy.deepcopy(dict(obj)))
        return new

    def create_all(self, objects):
        return sum(self.create(o) for o in objects)

    def replace_config_map(self, obj):
        self.calls.append(("config", obj["metadata"]["name"]))
        self.objects[("ConfigMap", obj["metadata"]["name"])] = copy.deepcopy(dict(obj))

    def delete_pods(self, namespace, names):
        for name in names:
            self.calls.append(("delete", name))
            self.objects.pop(("Pod", name), None)

    def annotate_pods(self, namespace, names, annotations):
        self.calls += [("annotate", n) for n in names]

    def delete(self, info, namespace, name):
        self.calls.append(("delete-object", name))

    def pods(self) -> tuple[PodState, ...]:
        return tuple(PodState.from_api(o) for k, o in self.objects.items() if k[0] == "Pod")


def example(name: str, **spec) -> dict:
    body = yaml.safe_load((REPO / "examples" / name).read_text())
    body["metadata"] |= {"uid": "uid-1", "generation": 1}
    body["spec"].update(spec)
    return body


def nodes(count: int, gpus: int = 8, **labels) -> tuple[NodeInfo, ...]:
    alloc = parse_resources({"cpu": 64, "memory": "512Gi", "nvidia.com/gpu": gpus})
    return tuple(NodeInfo(f"node-{i}", labels, alloc) for i in range(count))


RACK = {"topology.kubernetes.io/rack": "r1", "topology.kubernetes.io/zone": "z1"}


def run(body: dict, kube: FakeKube, cluster=None, pods=None):
    snapshot = Snapshot(kube.pods() if pods is None else pods, cluster or nodes(8, **RACK), {}, NOW)
    body = {**body, "status": kube.status}
    return reconcile(ADAPTERS[body["kind"]], body, snapshot, kube, OperatorConfig(default_image="img:1"))


def test_status_is_written_before_any_pod_is_created():
    kube = FakeKube()
    run(example("saetrainingjob.yaml"), kube)
    first_pod = next(i for i, c in enumerate(kube.calls) if c[0] == "create" and c[1].startswith("Pod/"))
    assert kube.calls[0] == ("status", "Pending") and first_pod > 0
    # elastic (2..8 pods): the largest size that fits now, packed into one rack
    assert sorted(k[1] for k in kube.objects if k[0] == "Pod") == [f"pythia70m-resid-saes-1-{r}" for r in range(8)]
    assert ("Service", "pythia70m-resid-saes") in kube.objects
    assert kube.status["placement"]["domain"] == "r1" and kube.status["worldSize"] == 8


def test_crash_in_the_middle_of_creation_then_restart_completes_the_same_gang():
    body = example("saetrainingjob.yaml")
    kube = FakeKube(fail_after_pods=2)
    with pytest.raises(RuntimeError, match="operator killed"):
        run(body, kube)
    assert sum(1 for k in kube.objects if k[0] == "Pod") == 2
    kube.fail_after_pods = None
    run(body, kube)  # the restarted operator
    pods = sorted(k[1] for k in kube.objects if k[0] == "Pod")
    assert pods == [f"pythia70m-resid-saes-1-{r}" for r in range(8)]
    assert kube.status["attempt"] == 1 and kube.status["restarts"] == 0


def test_workload_config_carries_spec_paths_and_gang_shape():
    kube = FakeKube()
    run(example("activationdump.yaml"), kube)
    config = yaml.safe_load(kube.objects[("ConfigMap", "pythia70m-resid-config")]["data"]["config.json"])
    assert config["kind"] == "ActivationDump" and config["spec"]["hookPoints"] == ["resid_post.3", "mlp_out.3"]
    assert config["paths"] == {"dataset": "/mnt/interp/dataset", "output": "/mnt/interp/output"}
    assert config["gang"] == {"size": 4, "attempt": 1, "processesPerPod": 1}
    pod = kube.objects[("Pod", "pythia70m-resid-1-0")]
    assert pod["spec"]["containers"][0]["command"][:3] == ["python", "-m", "interp_workloads.dump"]
    assert pod["spec"]["containers"][0]["image"] == "img:1"


def test_not_enough_capacity_creates_nothing():
    kube = FakeKube()
    run(example("saetrainingjob.yaml", gang={"replicas": 4, "minReplicas": 3, "maxReplicas": 4,
                                             "resources": {"limits": {"nvidia.com/gpu": 8}}}), kube, nodes(2, **RACK))
    assert not any(k[0] == "Pod" for k in kube.objects)
    placed = next(c for c in kube.status["conditions"] if c["type"] == "PodsPlaced")
    assert placed["status"] == "False" and "room for 2 in the whole cluster" in placed["message"]


def test_invalid_spec_fails_with_a_condition_and_no_pods():
    kube = FakeKube()
    result = run(example("saetrainingjob.yaml", saes=[{"name": "a", "hookPoint": "x", "dictSize": 4, "k": 4}]), kube)
    assert kube.status["phase"] == "Failed" and not any(k[0] == "Pod" for k in kube.objects)
    assert [e.reason for e in result.events] == ["InvalidSpec"]
    again = run(example("saetrainingjob.yaml", saes=[{"name": "a", "hookPoint": "x", "dictSize": 4, "k": 4}]), kube)
    assert again.events == []  # reported once, not on every resync


def test_inference_service_status_speaks_service():
    kube = FakeKube()
    body = example("interpinferenceservice.yaml")
    run(body, kube)
    assert kube.status["phase"] == "Progressing"
    assert kube.status["selector"] == "interp.dev/kind=InterpInferenceService,interp.dev/name=pythia70m"
    assert kube.status["url"] == "http://pythia70m.interp.svc:8000"
    ready = [PodState(p.name, p.attempt, p.rank, "Running", ready=True, node=f"node-{p.rank}") for p in kube.pods()]
    run(body, kube, pods=tuple(ready))
    assert kube.status["phase"] == "Ready" and kube.status["readyReplicas"] == 2
    assert "worldSize" not in kube.status
    pod = kube.objects[("Pod", "pythia70m-1-0")]
    assert pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == 8000


def test_profile_annotation_reaches_running_pods():
    kube = FakeKube()
    body = example("activationdump.yaml")
    run(body, kube)
    body["metadata"]["annotations"] = {naming.PROFILE_ANNOTATION: "10-20"}
    run(body, kube)
    assert sorted(n for c, n in kube.calls if c == "annotate") == [f"pythia70m-resid-1-{r}" for r in range(4)]
