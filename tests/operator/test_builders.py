"""Gang builders: ranked, pinned, restricted pods with torch.distributed env; Service, ConfigMap, PodGroups."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from interp_operator.api.common import SchedulingSpec, StorageRef, WorkerSpec
from interp_operator.gang import builders, naming
from interp_operator.gang.builders import GangPlan, Mount, Owner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pod_security import restricted_violations

OWNER = Owner("interp.dev/v1alpha1", "SAETrainingJob", "sae", "team-a", "uid-1")


class Plan:
    """Chainable builder of a GangPlan."""

    def __init__(self) -> None:
        self.fields: dict = {"owner": OWNER, "worker": WorkerSpec(), "scheduling": SchedulingSpec(),
                             "module": "interp_workloads.train", "attempt": 2, "size": 3}

    def worker(self, **spec) -> Plan:
        self.fields["worker"] = WorkerSpec.model_validate(spec)
        return self

    def scheduling(self, **spec) -> Plan:
        self.fields["scheduling"] = SchedulingSpec.model_validate(spec)
        return self

    def set(self, **fields) -> Plan:
        self.fields.update(fields)
        return self

    def build(self) -> GangPlan:
        return GangPlan(**self.fields)


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


PLANS = {
    "plain": Plan(),
    "gpus and torchrun": Plan().worker(processesPerPod=8, resources={"limits": {"nvidia.com/gpu": 8}}),
    "pinned": Plan().set(nodes=("n1", "n1", "n2")),
    "mounts": Plan().set(mounts=(Mount("model", StorageRef(claimName="data", subPath="m"), True),
                                 Mount("output", StorageRef(claimName="data", subPath="o"), False),
                                 Mount("dataset", StorageRef(uri="file:///shared/c"), True))),
    "user env": Plan().worker(env=[{"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}},
                                   {"name": "X", "value": "1"}]),
    "volcano": Plan().scheduling(gangScheduler="volcano", queueName="research"),
    "kueue": Plan().scheduling(gangScheduler="kueue", queueName="team-a"),
    "server": Plan().set(distributed=False, ports=(8000,), readiness_path="/healthz"),
    "dump": Plan().set(module="interp_workloads.dump", status_port=9400),
}


@pytest.mark.parametrize("name", PLANS)
def test_pods_are_valid_restricted_and_deterministic(name):
    plan = PLANS[name].build()
    pods = builders.pods(plan)
    assert pods == builders.pods(plan)
    assert [p["metadata"]["name"] for p in pods] == ["sae-2-0", "sae-2-1", "sae-2-2"]
    for pod in pods:
        kubernetes_validate.validate(pod, "1.33.0", strict=True)
        assert restricted_violations(pod) == []
        assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert pod["spec"]["restartPolicy"] == "Never"


def test_distributed_env_single_process_per_pod():
    pod = builders.pod(Plan().build(), 1)
    env = env_of(pod)
    rendezvous = (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"], env["MASTER_PORT"])
    assert rendezvous == ("1", "3", "sae-2-0.sae", str(builders.master_port(Plan().build())))
    assert 29500 <= builders.master_port(Plan().build()) < 30500
    assert pod["spec"]["containers"][0]["command"] == ["python", "-m", "interp_workloads.train", "--config",
                                                      "/etc/interp/config.json"]
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("sae-2-1", "sae")


def test_rendezvous_port_is_stable_per_attempt_and_differs_across_gangs():
    ports = {builders.master_port(Plan().set(attempt=a).build()) for a in range(1, 6)}
    assert len(ports) == 5 and builders.master_port(Plan().build()) == builders.master_port(Plan().build())


def test_torchrun_for_several_processes_per_pod():
    pod = builders.pod(PLANS["gpus and torchrun"].build(), 2)
    command = pod["spec"]["containers"][0]["command"]
    assert command[:5] == ["torchrun", "--nnodes=3", "--nproc-per-node=8", "--node-rank=2", "--master-addr=sae-2-0.sae"]
    env = env_of(pod)
    assert env["WORLD_SIZE"] == "24" and "RANK" not in env
    assert pod["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "8"}}


def test_pinned_ranks_follow_the_plan():
    pods = builders.pods(PLANS["pinned"].build())
    terms = [p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
             ["nodeSelectorTerms"][0]["matchFields"][0]["values"] for p in pods]
    assert terms == [["n1"], ["n1"], ["n2"]]


def test_one_volume_per_claim_and_uris_unmounted():
    pod = builders.pod(PLANS["mounts"].build(), 0)
    claims = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"name": "pvc-0", "persistentVolumeClaim": {"claimName": "data"}}]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/interp/model"] == {"name": "pvc-0", "mountPath": "/mnt/interp/model", "readOnly": True,
                                           "subPath": "m"}
    assert mounts["/mnt/interp/output"]["readOnly"] is False
    assert "/mnt/interp/dataset" not in mounts
    env = env_of(pod)
    assert (env["INTERP_PATH_MODEL"], env["INTERP_PATH_OUTPUT"]) == ("/mnt/interp/model", "/mnt/interp/output")
    assert "INTERP_PATH_DATASET" not in env


def test_user_env_comes_last_and_keeps_secret_refs():
    env = builders.pod(PLANS["user env"].build(), 0)["spec"]["containers"][0]["env"]
    assert env[-2:] == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                        {"name": "X", "value": "1"}]


@pytest.mark.parametrize(("name", "scheduler", "label", "annotation"), [
    ("volcano", "volcano", None, ("scheduling.k8s.io/group-name", "sae-2")),
    ("kueue", None, ("kueue.x-k8s.io/queue-name", "team-a"), ("kueue.x-k8s.io/pod-group-total-count", "3")),
    ("plain", None, None, None),
])
def test_scheduler_hand_offs(name, scheduler, label, annotation):
    plan = PLANS[name].build()
    pod = builders.pod(plan, 0)
    assert pod["spec"].get("schedulerName") == scheduler
    if label:
        assert pod["metadata"]["labels"][label[0]] == label[1]
    if annotation:
        assert pod["metadata"]["annotations"][annotation[0]] == annotation[1]
    group = builders.pod_group(plan)
    assert (group is not None) == (name == "volcano")
    if group:
        assert group["spec"] == {"minMember": 3, "queue": "research"}


def test_server_pods_have_ports_and_readiness_but_no_rendezvous():
    pod = builders.pod(PLANS["server"].build(), 0)
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8000}
    assert "MASTER_ADDR" not in env_of(pod)


def test_service_and_config_map():
    svc = builders.service(OWNER)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {naming.LABEL_KIND: "SAETrainingJob", naming.LABEL_NAME: "sae"}
    cm = builders.config_map(OWNER, {"b": 1, "a": [1, 2]})
    assert json.loads(cm["data"]["config.json"]) == {"a": [1, 2], "b": 1}
    for obj in (svc, cm, builders.service(OWNER, headless=False, ports=(8000,))):
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


@pytest.mark.parametrize(("name", "ports", "status_port"), [
    ("dump", [{"name": "status", "containerPort": 9400}], "9400"),
    ("plain", None, None),
    ("server", [{"name": "port-8000", "containerPort": 8000}], None),
])
def test_only_pods_with_a_status_port_serve_progress(name, ports, status_port):
    pod = builders.pod(PLANS[name].build(), 1)
    container = pod["spec"]["containers"][0]
    assert container.get("ports") == ports
    assert env_of(pod).get("INTERP_STATUS_PORT") == status_port


@pytest.mark.parametrize("name", PLANS)
def test_every_pod_leaves_its_result_in_the_termination_message(name):
    pod = builders.pod(PLANS[name].build(), 0)
    container = pod["spec"]["containers"][0]
    assert env_of(pod)["INTERP_TERMINATION_MESSAGE_PATH"] == container["terminationMessagePath"] == \
        "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("name", PLANS)
def test_every_pod_is_told_where_its_annotations_are_mounted(name):
    pod = builders.pod(PLANS[name].build(), 0)
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "podinfo")
    assert env_of(pod)["INTERP_PODINFO_DIR"] == mounts["podinfo"]
    assert {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}} in volume["downwardAPI"]["items"]
