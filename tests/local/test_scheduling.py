"""The scheduler: resources, nodeSelector, required node affinity, taints/tolerations, schedulerName.

Nodes made here through the API have no kubelet: pods bound to them are only scheduled, never run."""

from __future__ import annotations

import uuid

import pytest

from interp_operator.local.testing import wait_for


@pytest.fixture
def pool(kube_endpoint):
    """Two API-made nodes in a pool of their own (label pool=<id>); deleted after the test."""
    pool_id = uuid.uuid4().hex[:8]
    names = []
    for i, (gpus, taints) in enumerate([(1, []), (4, [{"key": "gpu", "value": "big", "effect": "NoSchedule"}])]):
        name = f"pool-{pool_id}-{i}"
        body = {"metadata": {"name": name, "labels": {"pool": pool_id, "rack": f"r{i}"}},
                "spec": {"taints": taints},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": str(gpus), "pods": "10"},
                           "conditions": [{"type": "Ready", "status": "True"}]}}
        assert kube_endpoint.request("POST", "/api/v1/nodes", json=body).status_code == 201
        names.append(name)
    yield pool_id, names
    for name in names:
        kube_endpoint.request("DELETE", f"/api/v1/nodes/{name}")


def make_pod(endpoint, namespace, name, pool_id, gpus=0, cpu="100m", **spec):
    resources = {"requests": {"cpu": cpu}, "limits": {}}
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    body = {"metadata": {"name": name}, "spec": {
        "nodeSelector": {"pool": pool_id, **spec.pop("nodeSelector", {})},
        "containers": [{"name": "main", "image": "local", "command": ["sleep", "600"], "resources": resources}],
        **spec}}
    response = endpoint.request("POST", f"/api/v1/namespaces/{namespace}/pods", json=body)
    assert response.status_code == 201, response.text


def node_of(endpoint, namespace, name):
    return endpoint.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}").json()["spec"].get("nodeName")


def scheduled_condition(endpoint, namespace, name):
    pod = endpoint.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}").json()
    return next((c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), None)


TOLERATE_BIG = [{"key": "gpu", "operator": "Equal", "value": "big", "effect": "NoSchedule"}]

CASES = [
    # (case, pod kwargs, expected node index or None, expected message fragment)
    ("fits the untainted node", {"gpus": 1}, 0, ""),
    ("taint keeps it off the big node", {"gpus": 2}, None, "untolerated taint {gpu: big}"),
    ("toleration admits the big node", {"gpus": 4, "tolerations": TOLERATE_BIG}, 1, ""),
    ("too many gpus anywhere", {"gpus": 8, "tolerations": TOLERATE_BIG}, None, "Insufficient nvidia.com/gpu"),
    ("too much cpu", {"cpu": "5"}, None, "Insufficient cpu"),
    ("node selector", {"nodeSelector": {"rack": "r1"}, "tolerations": TOLERATE_BIG}, 1, ""),
    ("required node affinity", {"tolerations": TOLERATE_BIG, "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}]}}}}, 1, ""),
    ("affinity that matches nothing", {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["r0", "r1"]}]}]}}}},
     None, "didn't match Pod's node affinity/selector"),
]


@pytest.mark.parametrize(("case", "kwargs", "expected", "message"), CASES, ids=[c[0] for c in CASES])
def test_placement(kube_endpoint, kube_namespace, pool, case, kwargs, expected, message):
    pool_id, names = pool
    make_pod(kube_endpoint, kube_namespace, "p", pool_id, **kwargs)
    if expected is not None:
        wait_for(lambda: node_of(kube_endpoint, kube_namespace, "p") == names[expected],
                 message=f"not bound to {names[expected]}")
        assert scheduled_condition(kube_endpoint, kube_namespace, "p")["status"] == "True"
        return
    condition = wait_for(lambda: scheduled_condition(kube_endpoint, kube_namespace, "p"))
    assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
    assert message in condition["message"] and condition["message"].startswith("0/")
    assert node_of(kube_endpoint, kube_namespace, "p") is None


def test_resources_are_accounted_and_freed(kube_endpoint, kube_namespace, pool):
    pool_id, names = pool
    make_pod(kube_endpoint, kube_namespace, "first", pool_id, gpus=1)
    wait_for(lambda: node_of(kube_endpoint, kube_namespace, "first") == names[0])
    make_pod(kube_endpoint, kube_namespace, "second", pool_id, gpus=1)
    wait_for(lambda: (scheduled_condition(kube_endpoint, kube_namespace, "second") or {}).get("reason")
             == "Unschedulable")
    kube_endpoint.request("DELETE", f"/api/v1/namespaces/{kube_namespace}/pods/first")
    wait_for(lambda: node_of(kube_endpoint, kube_namespace, "second") == names[0],
             message="the freed GPU was never reused")


def test_pods_for_another_scheduler_stay_pending(kube_endpoint, kube_namespace, pool):
    pool_id, _ = pool
    make_pod(kube_endpoint, kube_namespace, "elsewhere", pool_id, schedulerName="kueue-like")
    make_pod(kube_endpoint, kube_namespace, "here", pool_id)
    wait_for(lambda: node_of(kube_endpoint, kube_namespace, "here"))
    assert node_of(kube_endpoint, kube_namespace, "elsewhere") is None
    assert scheduled_condition(kube_endpoint, kube_namespace, "elsewhere") is None


def test_a_pod_whose_claim_does_not_exist_waits_until_it_does(kube_endpoint, kube_namespace, pool):
    pool_id, _ = pool
    volumes = [{"name": "out", "persistentVolumeClaim": {"claimName": "later"}}]
    make_pod(kube_endpoint, kube_namespace, "needs-claim", pool_id, volumes=volumes)
    condition = wait_for(lambda: scheduled_condition(kube_endpoint, kube_namespace, "needs-claim"))
    assert (condition["status"], condition["reason"]) == ("False", "Unschedulable")
    assert condition["message"].endswith(' nodes are available: persistentvolumeclaim "later" not found.')
    claim = {"metadata": {"name": "later"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    response = kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/persistentvolumeclaims", json=claim)
    assert response.status_code == 201, response.text
    wait_for(lambda: node_of(kube_endpoint, kube_namespace, "needs-claim"))
