"""reconcile() against a recording fake of the API module: order of writes, crash safety, kind adapters."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from interp_operator.gang import naming
from interp_operator.gang.placement import NodeInfo
from interp_operator.gang.pods import PodState
from interp_operator.kinds import ADAPTERS
from interp_operator.local.patch import merge_patch
from interp_operator.quantity import parse_resources
from interp_operator.reconciler import OperatorConfig, Snapshot, reconcile, status_patch

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
        self.status = merge_patch(self.status, copy.deepcopy(dict(status)))  # the API server's merge patch

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


SUCCEEDED_DUMP = {"spec": {"output": {"claimName": "interp-data", "subPath": "stores/pythia70m-resid"}},
                  "status": {"phase": "Succeeded"}}


def run(body: dict, kube: FakeKube, cluster=None, pods=None, reports=None, related=None,
        config: OperatorConfig | None = None):
    adapter = ADAPTERS[body["kind"]]
    if related is None:  # every referenced ActivationDump has Succeeded
        related = {ref: SUCCEEDED_DUMP for ref in adapter.references(body)}
    snapshot = Snapshot(kube.pods() if pods is None else pods, cluster or nodes(8, **RACK), {}, NOW, reports or {},
                        related)
    body = {**body, "status": kube.status}
    return reconcile(adapter, body, snapshot, kube, config or OperatorConfig(default_image="img:1"))


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
    ready = [PodState(p.name, p.attempt, p.rank, "Running", ready=True, node=f"node-{p.rank}", revision=p.revision)
             for p in kube.pods()]
    run(body, kube, pods=tuple(ready))
    assert kube.status["phase"] == "Ready" and kube.status["readyReplicas"] == 2
    assert kube.status["updatedReplicas"] == 2 and kube.status["placement"] == {"nodes": ["node-0", "node-1"]}
    assert "worldSize" not in kube.status
    container = kube.objects[("Pod", "pythia70m-1-0")]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}


def test_profile_annotation_reaches_running_pods():
    kube = FakeKube()
    body = example("activationdump.yaml")
    run(body, kube)
    body["metadata"]["annotations"] = {naming.PROFILE_ANNOTATION: "10-20"}
    run(body, kube)
    assert sorted(n for c, n in kube.calls if c == "annotate") == [f"pythia70m-resid-1-{r}" for r in range(4)]


def dump_pods(kube: FakeKube, phase: str, messages=None) -> tuple[PodState, ...]:
    """The dump's pods as the watch would show them: ``phase``, an IP each, rank 0's termination message."""
    return tuple(PodState(p.name, p.attempt, p.rank, phase, ready=phase == "Running", node=f"node-{p.rank}",
                          ip=f"10.1.0.{p.rank}", message=(messages or {}).get(p.rank)) for p in kube.pods())


def test_dump_status_follows_the_ranks_reports_and_requeues_for_more():
    kube = FakeKube()
    body = example("activationdump.yaml")
    run(body, kube)
    running = dump_pods(kube, "Running")
    report = {"stage": "extract", "shardsDone": 3, "shardsTotal": 10, "tokensDone": 300, "tokensTotal": 1000,
              "bytesWritten": 3000, "tokensPerSecond": 35.0}
    result = run(body, kube, pods=running, reports={"pythia70m-resid-1-0": report,
                                                      "pythia70m-resid-1-1": report | {"tokensPerSecond": 35.0}})
    assert kube.status["phase"] == "Running" and result.requeue_after == 10
    assert (kube.status["shardsDone"], kube.status["shardsTotal"], kube.status["bytesWritten"]) == (3, 10, 3000)
    assert kube.status["progress"] == {"tokensDone": 300, "tokensTotal": 1000, "percent": 30.0,
                                       "tokensPerSecond": 70.0, "eta": "2026-11-24T12:00:10Z"}
    calls = len(kube.calls)
    assert run(body, kube, pods=running).requeue_after == 10  # no fresh report: the status keeps what it had
    assert kube.calls[calls:] == [] and kube.status["shardsDone"] == 3


def test_dump_succeeds_only_with_rank_0s_verified_store():
    kube = FakeKube()
    body = example("activationdump.yaml")
    run(body, kube)
    report = {"shardsDone": 3, "shardsTotal": 10, "tokensDone": 300, "tokensTotal": 1000, "tokensPerSecond": 50.0}
    run(body, kube, pods=dump_pods(kube, "Running"), reports={"pythia70m-resid-1-2": report})
    assert "eta" in kube.status["progress"]
    message = {"verified": True, "manifest": "manifest.json", "tokens": 1000, "shards": 10, "bytes": 99,
               "hookPoints": ["resid_post.3", "mlp_out.3"], "dModel": 512, "dtype": "bfloat16", "sha256": "0" * 64}
    result = run(body, kube, pods=dump_pods(kube, "Succeeded", {0: json.dumps(message)}))
    status = kube.status
    assert status["phase"] == "Succeeded" and [e.reason for e in result.events] == ["AllPodsSucceeded"]
    assert status["manifest"] == "pvc://interp-data/activations/pythia70m-resid/manifest.json"
    assert status["summary"] == {"hookPoints": ["resid_post.3", "mlp_out.3"], "dModel": 512, "dtype": "bfloat16",
                                 "tokens": 1000}
    assert (status["shardsDone"], status["shardsTotal"], status["bytesWritten"]) == (10, 10, 99)
    assert status["progress"] == {"tokensDone": 1000, "tokensTotal": 1000, "percent": 100.0}  # eta removed
    assert result.requeue_after is None


@pytest.mark.parametrize(("message", "why"), [
    (None, "left no termination message"),
    ("Killed", "not JSON"),
    ('{"verified": false}', "did not report a verified store"),
])
def test_dump_whose_store_is_not_verified_fails(message, why):
    kube = FakeKube()
    body = example("activationdump.yaml")
    run(body, kube)
    result = run(body, kube, pods=dump_pods(kube, "Succeeded", {0: message}))
    failed = next(c for c in kube.status["conditions"] if c["type"] == "Failed")
    assert (kube.status["phase"], failed["status"], failed["reason"]) == ("Failed", "True", "OutputNotVerified")
    assert why in failed["message"] and "manifest" not in kube.status
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "OutputNotVerified")]


def test_training_jobs_are_polled_for_progress_and_read_the_dumps_store():
    kube = FakeKube()
    body = example("saetrainingjob.yaml")
    run(body, kube)
    running = tuple(PodState(p.name, p.attempt, p.rank, "Running", ready=True, node=f"node-{p.rank}")
                    for p in kube.pods())
    result = run(body, kube, pods=running)
    adapter = ADAPTERS["SAETrainingJob"]
    assert kube.status["phase"] == "Running" and result.requeue_after == adapter.progress_interval_s
    faster = run(body, kube, pods=running, config=OperatorConfig(default_image="img:1", progress_interval_s=1.5))
    assert faster.requeue_after == 1.5 < adapter.progress_interval_s
    pod = kube.objects[("Pod", "pythia70m-resid-saes-1-0")]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in pod["env"]}
    assert env["INTERP_STATUS_PORT"] == "9400" and env["INTERP_PATH_ACTIVATIONS"] == "/mnt/interp/activations"
    store = next(m for m in pod["volumeMounts"] if m["mountPath"] == "/mnt/interp/activations")
    assert store["readOnly"] is True and store["subPath"] == "stores/pythia70m-resid"
    config = json.loads(kube.objects[("ConfigMap", naming.config_map_name("pythia70m-resid-saes"))]["data"]
                        ["config.json"])
    assert config["spec"]["data"] == {"store": {"claimName": "interp-data", "subPath": "stores/pythia70m-resid",
                                                "readOnly": True}}
    assert config["activationDump"] == "pythia70m-resid"


@pytest.mark.parametrize(("dump", "reason"), [
    (None, "ActivationDumpNotFound"),
    ({"spec": {}, "status": {"phase": "Running"}}, "ActivationDumpNotReady"),
    ({"spec": {}, "status": {"phase": "Failed", "conditions": [{"type": "Failed", "message": "exit code 3"}]}},
     "ActivationDumpFailed"),
])
def test_training_job_waits_for_its_activation_dump(dump, reason):
    kube = FakeKube()
    body = example("saetrainingjob.yaml")
    result = run(body, kube, related={("ActivationDump", "pythia70m-resid"): dump})
    assert not kube.objects, "no gang before the dump has Succeeded"
    ready = next(c for c in kube.status["conditions"] if c["type"] == "DataReady")
    assert (kube.status["phase"], ready["status"], ready["reason"]) == ("Pending", "False", reason)
    assert "'pythia70m-resid'" in ready["message"] and result.requeue_after
    assert [e.reason for e in result.events] == [reason]
    again = run(body, kube, related={("ActivationDump", "pythia70m-resid"): dump})
    assert again.events == [] and kube.calls.count(("status", "Pending")) == 1, "no rewrite while nothing changed"
    run(body, kube)  # the dump Succeeded: the gang starts
    assert any(k[0] == "Pod" for k in kube.objects)
    ready = next(c for c in kube.status["conditions"] if c["type"] == "DataReady")
    assert (ready["status"], ready["reason"]) == ("True", "ActivationDumpSucceeded")


def test_a_suspended_job_waiting_for_its_dump_is_suspended_and_resumes_to_waiting():
    kube = FakeKube()
    body = example("saetrainingjob.yaml")
    body["spec"]["runPolicy"] = {"suspend": True}
    missing = {("ActivationDump", "pythia70m-resid"): None}
    run(body, kube, related=missing)
    assert kube.status["phase"] == "Suspended" and not kube.objects
    body["spec"]["runPolicy"] = {"suspend": False}
    body["metadata"]["generation"] = 2
    run(body, kube, related=missing)
    conditions = {c["type"]: c for c in kube.status["conditions"]}
    assert kube.status["phase"] == "Pending" and not kube.objects
    assert (conditions["DataReady"]["status"], conditions["DataReady"]["reason"]) == ("False", "ActivationDumpNotFound")
    assert (conditions["Suspended"]["status"], conditions["Suspended"]["reason"],
            conditions["Suspended"]["observedGeneration"]) == ("False", "Resumed", 2)


@pytest.mark.parametrize(("stored", "status", "patch"), [
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": None}),
    ({"p": {"x": 1, "eta": "t"}}, {"p": {"x": 2}}, {"p": {"x": 2, "eta": None}}),
    ({"p": {"x": 1}}, {"p": 3}, {"p": 3}),
    ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),
    ({}, {"p": {"x": 1}}, {"p": {"x": 1}}),
])
def test_status_patch_removes_what_the_status_dropped(stored, status, patch):
    assert status_patch(stored, status) == patch
    assert merge_patch(stored, patch) == status
