"""Gang builders: ranked, pinned, restricted pods with torch.distributed env; Service, ConfigMap, PodGroups."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kubernetes_validate
import pydantic
import pytest

from interp_operator.api.common import SchedulingSpec, StorageRef, WorkerSpec
from interp_operator.api.pod import Volume, VolumeMount
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


USER_TERMS = [
    {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]},
    {"matchExpressions": [{"key": "gpu-generation", "operator": "Gt", "values": ["8"]},
                          {"key": "maintenance", "operator": "DoesNotExist"}]},
]
GPU_CLUSTER = {
    "runtimeClassName": "nvidia",
    "imagePullSecrets": [{"name": "registry-cred"}],
    "priorityClassName": "research-high",
    "podLabels": {"team": "interp", "kueue.x-k8s.io/queue-name": "someone-else"},
    "podAnnotations": {"sidecar.istio.io/inject": "false", "scheduling.k8s.io/group-name": "someone-else"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": USER_TERMS},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z1"]}]}}],
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname", "labelSelector": {}}}]},
    },
    "volumes": [
        {"name": "datasets", "persistentVolumeClaim": {"claimName": "lustre-datasets", "readOnly": True}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "200Gi"}},
        {"name": "ca-bundle", "configMap": {"name": "corporate-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"name": "nvme", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "local-nvme",
            "resources": {"requests": {"storage": "500Gi"}}}}}},
    ],
    "volumeMounts": [
        {"name": "datasets", "mountPath": "/datasets", "readOnly": True},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True},
        {"name": "nvme", "mountPath": "/nvme"},
    ],
    "modelCache": {"claimName": "hf-cache", "subPath": "hub"},
}
"""Everything a GPU cluster's pods carry besides the operator's own parts."""

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
    "gpu cluster": Plan().worker(**GPU_CLUSTER).set(nodes=("n1", "n1", "n2")),
    "gpu cluster via kueue": Plan().worker(**GPU_CLUSTER).scheduling(gangScheduler="kueue", queueName="team-a"),
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


def term_matches(term: dict, labels: dict[str, str], name: str) -> bool:
    """A node selector term as the kube-scheduler reads it: every expression and field requirement holds."""
    def holds(req: dict, value: str | None) -> bool:
        op, values = req["operator"], req.get("values", [])
        if op == "In":
            return value in values
        if op == "NotIn":
            return value not in values
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        return value is not None and (int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0]))

    return (all(holds(r, labels.get(r["key"])) for r in term.get("matchExpressions", []))
            and all(holds(r, name) for r in term.get("matchFields", [])))


def schedulable_on(pod: dict, labels: dict[str, str], name: str) -> bool:
    required = pod["spec"].get("affinity", {}).get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    return required is None or any(term_matches(t, labels, name) for t in required["nodeSelectorTerms"])


NODES = [  # (name, labels)
    ("n1", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
    ("n2", {"gpu-generation": "9"}),
    ("n2", {"gpu-generation": "9", "maintenance": "true"}),
    ("n1", {"gpu-generation": "7"}),
    ("n3", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
    ("n1", {}),
]


@pytest.mark.parametrize(("rank", "planned"), [(0, "n1"), (2, "n2")])
def test_user_node_affinity_is_anded_with_the_pin_to_the_planned_node(rank, planned):
    pod = builders.pod(PLANS["gpu cluster"].build(), rank)
    for name, labels in NODES:
        wanted = name == planned and any(term_matches(t, labels, name) for t in USER_TERMS)
        assert schedulable_on(pod, labels, name) == wanted, (name, labels)
    node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] == \
        GPU_CLUSTER["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pod["spec"]["affinity"]["podAntiAffinity"] == GPU_CLUSTER["affinity"]["podAntiAffinity"]


def test_without_a_plan_the_user_affinity_goes_as_written():
    pod = builders.pod(PLANS["gpu cluster via kueue"].build(), 0)
    assert pod["spec"]["affinity"] == GPU_CLUSTER["affinity"]
    assert "affinity" not in builders.pod(PLANS["plain"].build(), 0)["spec"]


@pytest.mark.parametrize("name", ["gpu cluster", "gpu cluster via kueue"])
def test_every_pod_carries_the_worker_pod_fields(name):
    for pod in builders.pods(PLANS[name].build()):
        spec = pod["spec"]
        assert (spec["runtimeClassName"], spec["priorityClassName"]) == ("nvidia", "research-high")
        assert spec["imagePullSecrets"] == [{"name": "registry-cred"}]
        assert pod["metadata"]["labels"]["team"] == "interp"
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        volumes = {v["name"]: v for v in spec["volumes"]}
        for volume in GPU_CLUSTER["volumes"]:
            source = next(k for k in volume if k != "name")
            assert volumes[volume["name"]][source] == {"medium": ""} | volume[source] if source == "emptyDir" \
                else volumes[volume["name"]][source] == volume[source]
        mounts = spec["containers"][0]["volumeMounts"]
        for mount in GPU_CLUSTER["volumeMounts"]:
            assert {"readOnly": False} | mount in mounts


def test_the_operator_labels_and_hand_offs_win_over_the_users():
    kueue = builders.pod(PLANS["gpu cluster via kueue"].build(), 0)["metadata"]
    assert kueue["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    volcano_plan = Plan().worker(**GPU_CLUSTER).scheduling(gangScheduler="volcano").build()
    volcano = builders.pod(volcano_plan, 0)["metadata"]
    assert volcano["annotations"]["scheduling.k8s.io/group-name"] == "sae-2"
    assert volcano["labels"][naming.LABEL_NAME] == "sae"


def test_model_cache_is_one_claim_for_every_rank_with_hf_home_on_it():
    pods = builders.pods(PLANS["gpu cluster"].build())
    for pod in pods:
        container = pod["spec"]["containers"][0]
        cache = next(m for m in container["volumeMounts"] if m["mountPath"] == env_of(pod)["HF_HOME"])
        assert cache["subPath"] == "hub" and not cache.get("readOnly")
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == cache["name"])
        assert volume == {"name": cache["name"], "persistentVolumeClaim": {"claimName": "hf-cache"}}


def test_without_a_model_cache_hf_home_is_in_the_pods_scratch_space():
    pod = builders.pod(PLANS["plain"].build(), 0)
    mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    hf_home = env_of(pod)["HF_HOME"]
    assert hf_home.startswith("/tmp/")
    assert next(v for v in pod["spec"]["volumes"] if v["name"] == mounts["/tmp"]) == {"name": "tmp", "emptyDir": {}}
    assert not any(m["mountPath"] == hf_home for m in pod["spec"]["containers"][0]["volumeMounts"])


def test_the_operators_own_volume_names_and_paths_are_refused_to_users():
    plan = Plan().worker(**GPU_CLUSTER).set(
        mounts=(Mount("model", StorageRef(claimName="a"), True), Mount("output", StorageRef(claimName="b"), False)),
        secret_files=(builders.SecretFile("auth", "tokens", "tokens", "INTERP_AUTH_FILE"),)).build()
    pod = builders.pod(plan, 0)
    users = {v["name"] for v in GPU_CLUSTER["volumes"]}
    own_volumes = [v["name"] for v in pod["spec"]["volumes"] if v["name"] not in users]
    own_paths = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] not in users]
    own_paths.append(pod["spec"]["containers"][0]["terminationMessagePath"])
    assert {"pvc-0", "pvc-1", "secret-0", "model-cache", "config"} <= set(own_volumes)
    for name in own_volumes:
        with pytest.raises(pydantic.ValidationError, match="volume name is reserved"):
            Volume.model_validate({"name": name, "emptyDir": {}})
    for path in own_paths:
        with pytest.raises(pydantic.ValidationError, match="mountPath is reserved"):
            VolumeMount.model_validate({"name": "x", "mountPath": path})
