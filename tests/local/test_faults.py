"""Fault injection: killed processes, NotReady nodes (eviction), deleted nodes; over the HTTP admin API."""

from __future__ import annotations

import sys

import pytest

from interp_operator.local.testing import CHAOS_TAINT, wait_for

TOLERATE_CHAOS = [{"key": CHAOS_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]


def chaos_pod(endpoint, namespace, name, restart="Always", tolerations=()):
    body = {"metadata": {"name": name}, "spec": {
        "restartPolicy": restart, "nodeSelector": {"interp.dev/chaos": "true"},
        "tolerations": [*TOLERATE_CHAOS, *tolerations], "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "local", "command": [sys.executable, "-c",
                                                                      "import time; time.sleep(600)"]}]}}
    assert endpoint.request("POST", f"/api/v1/namespaces/{namespace}/pods", json=body).status_code == 201


def get_pod(endpoint, namespace, name):
    return endpoint.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")


def running(endpoint, namespace, name):
    statuses = get_pod(endpoint, namespace, name).json()["status"].get("containerStatuses") or []
    return bool(statuses) and "running" in statuses[0]["state"]


def ready(endpoint, namespace, name):
    conditions = get_pod(endpoint, namespace, name).json()["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_killing_a_process_restarts_or_fails_the_pod(kube_endpoint, kube_namespace):
    chaos_pod(kube_endpoint, kube_namespace, "victim")
    chaos_pod(kube_endpoint, kube_namespace, "once", restart="Never")
    wait_for(lambda: running(kube_endpoint, kube_namespace, "victim") and running(kube_endpoint, kube_namespace,
                                                                                 "once"), timeout=20)
    for name in ("victim", "once"):
        response = kube_endpoint.request("POST", f"/interp-local/v1/namespaces/{kube_namespace}/pods/{name}/kill")
        assert response.status_code == 200, response.text
    wait_for(lambda: get_pod(kube_endpoint, kube_namespace, "victim").json()["status"]["containerStatuses"][0]
             ["restartCount"] == 1, timeout=20)
    last = get_pod(kube_endpoint, kube_namespace, "victim").json()["status"]["containerStatuses"][0]["lastState"]
    assert last["terminated"]["exitCode"] == 137
    wait_for(lambda: get_pod(kube_endpoint, kube_namespace, "once").json()["status"]["phase"] == "Failed")


@pytest.fixture
def chaos_node(kube_endpoint):
    yield "node-chaos"
    kube_endpoint.request("POST", "/interp-local/v1/nodes/node-chaos/ready")


def test_not_ready_node_marks_pods_unready_and_evicts_them(kube_endpoint, kube_namespace, chaos_node):
    forever = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]
    chaos_pod(kube_endpoint, kube_namespace, "evicted")
    chaos_pod(kube_endpoint, kube_namespace, "tolerant", tolerations=forever)
    wait_for(lambda: ready(kube_endpoint, kube_namespace, "evicted") and ready(kube_endpoint, kube_namespace,
                                                                              "tolerant"), timeout=20)
    assert kube_endpoint.request("POST", f"/interp-local/v1/nodes/{chaos_node}/not-ready").status_code == 200
    node = kube_endpoint.request("GET", f"/api/v1/nodes/{chaos_node}").json()
    assert any(t["key"] == "node.kubernetes.io/unreachable" for t in node["spec"]["taints"])
    assert not ready(kube_endpoint, kube_namespace, "evicted")
    # Eviction after the (test-sized) toleration period; the dead kubelet cannot confirm, so it stays Terminating.
    wait_for(lambda: get_pod(kube_endpoint, kube_namespace, "evicted").json()["metadata"].get("deletionTimestamp"),
             timeout=10)
    assert not get_pod(kube_endpoint, kube_namespace, "tolerant").json()["metadata"].get("deletionTimestamp")
    kube_endpoint.request("POST", f"/interp-local/v1/nodes/{chaos_node}/ready")
    wait_for(lambda: get_pod(kube_endpoint, kube_namespace, "evicted").status_code == 404, timeout=10)
    wait_for(lambda: ready(kube_endpoint, kube_namespace, "tolerant"), timeout=20,
             message="the tolerant pod's container was not restarted when the node came back")


def test_deleting_a_node_removes_its_pods(kube_endpoint, kube_namespace, local_plane):
    from interp_operator.local.nodes import NodeConfig

    # A node of its own, so the shared ones stay: a kubelet-run node made through the plane.
    plane = local_plane
    plane.call(plane.kubelet.add_node, NodeConfig("node-doomed", labels={"doomed": "yes"}))
    body = {"metadata": {"name": "on-doomed"}, "spec": {"nodeSelector": {"doomed": "yes"}, "containers": [
        {"name": "main", "image": "local", "command": [sys.executable, "-c", "import time; time.sleep(600)"]}]}}
    kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/pods", json=body)
    wait_for(lambda: running(kube_endpoint, kube_namespace, "on-doomed"), timeout=20)
    assert kube_endpoint.request("DELETE", "/api/v1/nodes/node-doomed").status_code == 200
    wait_for(lambda: get_pod(kube_endpoint, kube_namespace, "on-doomed").status_code == 404, timeout=10)
