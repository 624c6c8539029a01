"""Built-in kinds: pods, services, events (both API groups), config, leases; GC by ownerReferences."""

from __future__ import annotations

import json

import pytest

from interp_operator.local.testing import wait_for

MERGE = {"Content-Type": "application/merge-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}


def pod(name, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "main", "image": "local",
                                                                  "command": ["sleep", "1"]}], **spec}}


def test_pod_create_defaults_and_status(kube_endpoint, kube_namespace):
    response = kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/pods", json=pod("p"))
    assert response.status_code == 201, response.text
    obj = response.json()
    assert obj["status"]["phase"] == "Pending" and obj["status"]["qosClass"] == "BestEffort"
    assert obj["spec"]["restartPolicy"] == "Always" and obj["spec"]["terminationGracePeriodSeconds"] == 30
    assert obj["metadata"]["namespace"] == kube_namespace


@pytest.mark.parametrize(("spec", "field"), [
    ({"containers": []}, "spec.containers"),
    ({"containers": [{"name": "a"}]}, "spec.containers[0].image"),
    ({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "x"}]}, "spec.containers[1].name"),
    ({"restartPolicy": "Sometimes"}, "spec.restartPolicy"),
])
def test_invalid_pods_are_rejected(kube_endpoint, kube_namespace, spec, field):
    response = kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/pods", json=pod("bad", **spec))
    assert response.status_code == 422
    assert any(c["field"] == field for c in response.json()["details"]["causes"]), response.text


def test_pod_spec_is_immutable_except_images(kube_endpoint, kube_namespace):
    base = f"/api/v1/namespaces/{kube_namespace}/pods"
    kube_endpoint.request("POST", base, json=pod("imm"))
    image = kube_endpoint.request("PATCH", f"{base}/imm", headers=STRATEGIC, data=json.dumps(
        {"spec": {"containers": [{"name": "main", "image": "other"}]}}))
    assert image.status_code == 200 and image.json()["spec"]["containers"][0]["image"] == "other"
    assert image.json()["spec"]["containers"][0]["command"] == ["sleep", "1"]  # merged by name, not replaced
    command = kube_endpoint.request("PATCH", f"{base}/imm", headers=STRATEGIC, data=json.dumps(
        {"spec": {"containers": [{"name": "main", "command": ["true"]}]}}))
    assert command.status_code == 422 and "pod updates may not change fields" in command.text


def test_invalid_names_and_labels(kube_endpoint, kube_namespace):
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    assert kube_endpoint.request("POST", base, json={"metadata": {"name": "Upper_Case"}}).status_code == 422
    bad_label = {"metadata": {"name": "ok", "labels": {"a": "not valid!"}}}
    assert kube_endpoint.request("POST", base, json=bad_label).status_code == 422
    assert kube_endpoint.request("POST", "/api/v1/namespaces", json={"metadata": {"name": "a.b"}}).status_code == 422
    missing = kube_endpoint.request("POST", "/api/v1/namespaces/no-such-ns/configmaps",
                                    json={"metadata": {"name": "x"}})
    assert missing.status_code == 404 and missing.json()["message"] == 'namespaces "no-such-ns" not found'


def test_services_get_cluster_ips(kube_endpoint, kube_namespace):
    base = f"/api/v1/namespaces/{kube_namespace}/services"
    svc = kube_endpoint.request("POST", base, json={"metadata": {"name": "svc"}, "spec": {
        "selector": {"app": "x"}, "ports": [{"port": 80}]}}).json()
    assert svc["spec"]["clusterIP"].startswith("10.96.") and svc["spec"]["ports"][0]["protocol"] == "TCP"
    headless = kube_endpoint.request("POST", base, json={"metadata": {"name": "hl"}, "spec": {
        "clusterIP": "None", "selector": {"app": "x"}, "ports": [{"port": 80}]}}).json()
    assert headless["spec"]["clusterIP"] == "None"


def test_events_are_served_by_both_api_groups(kube_endpoint, kube_namespace):
    core = {"metadata": {"name": "ev1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": kube_namespace},
            "reason": "Started", "message": "it started", "type": "Normal", "source": {"component": "kubelet"}}
    assert kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/events", json=core).status_code == 201
    new = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "ev2"},
           "regarding": {"kind": "Pod", "name": "q", "namespace": kube_namespace}, "reason": "Pulled",
           "note": "pulled it", "type": "Normal", "action": "Pull", "reportingController": "me",
           "reportingInstance": "me-1", "eventTime": "2026-01-01T00:00:00.000000Z"}
    created = kube_endpoint.request("POST", f"/apis/events.k8s.io/v1/namespaces/{kube_namespace}/events", json=new)
    assert created.status_code == 201, created.text
    assert created.json()["note"] == "pulled it" and created.json()["regarding"]["name"] == "q"
    as_core = kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/events/ev2").json()
    assert as_core["message"] == "pulled it" and as_core["involvedObject"]["name"] == "q"
    as_new = kube_endpoint.request("GET", f"/apis/events.k8s.io/v1/namespaces/{kube_namespace}/events/ev1").json()
    assert as_new["note"] == "it started" and as_new["regarding"]["kind"] == "Pod"
    by_object = kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/events",
                                      params={"fieldSelector": "involvedObject.name=p,reason=Started"}).json()
    assert [e["metadata"]["name"] for e in by_object["items"]] == ["ev1"]


@pytest.mark.parametrize(("plural", "body"), [
    ("configmaps", {"metadata": {"name": "c"}, "data": {"k": "v"}}),
    ("secrets", {"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}}),
    ("persistentvolumeclaims", {"metadata": {"name": "pvc"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    ("serviceaccounts", {"metadata": {"name": "sa"}}),
])
def test_core_namespaced_kinds_round_trip(kube_endpoint, kube_namespace, plural, body):
    base = f"/api/v1/namespaces/{kube_namespace}/{plural}"
    created = kube_endpoint.request("POST", base, json=body)
    assert created.status_code == 201, created.text
    name = body["metadata"]["name"]
    patched = kube_endpoint.request("PATCH", f"{base}/{name}", headers=MERGE,
                                    data=json.dumps({"metadata": {"labels": {"x": "y"}}}))
    assert patched.status_code == 200 and patched.json()["metadata"]["labels"] == {"x": "y"}
    assert kube_endpoint.request("DELETE", f"{base}/{name}").status_code == 200
    assert kube_endpoint.request("GET", f"{base}/{name}").status_code == 404


def test_leases_support_optimistic_concurrency(kube_endpoint, kube_namespace):
    base = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases"
    lease = kube_endpoint.request("POST", base, json={"metadata": {"name": "leader"}, "spec": {
        "holderIdentity": "a", "leaseDurationSeconds": 15}}).json()
    lease["spec"]["holderIdentity"] = "b"
    assert kube_endpoint.request("PUT", f"{base}/leader", json=lease).status_code == 200
    lease["spec"]["holderIdentity"] = "c"
    assert kube_endpoint.request("PUT", f"{base}/leader", json=lease).status_code == 409


def _owned(name, owner, block=False):
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}
    if block:
        ref["blockOwnerDeletion"] = True
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
def test_garbage_collection_by_owner_references(kube_endpoint, kube_namespace, policy):
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    owner = kube_endpoint.request("POST", base, json={"metadata": {"name": "owner"}}).json()
    child = kube_endpoint.request("POST", base, json=_owned("child", owner, block=True)).json()
    held = _owned("grandchild", child)
    held["metadata"]["finalizers"] = ["tests.interp.dev/hold"]
    kube_endpoint.request("POST", base, json=held)
    deleted = kube_endpoint.request("DELETE", f"{base}/owner", json={"propagationPolicy": policy})
    assert deleted.status_code in (200, 202), deleted.text
    if policy == "Orphan":
        wait_for(lambda: kube_endpoint.request("GET", f"{base}/owner").status_code == 404)
        remaining = kube_endpoint.request("GET", f"{base}/child").json()
        assert "ownerReferences" not in remaining["metadata"]
        return
    if policy == "Foreground":
        # The owner waits for its dependents; the grandchild's finalizer holds the whole chain.
        wait_for(lambda: kube_endpoint.request("GET", f"{base}/grandchild").json()["metadata"].get("deletionTimestamp"))
        owner_now = kube_endpoint.request("GET", f"{base}/owner").json()
        assert "foregroundDeletion" in owner_now["metadata"]["finalizers"]
    else:
        wait_for(lambda: kube_endpoint.request("GET", f"{base}/child").status_code == 404)
        wait_for(lambda: kube_endpoint.request("GET", f"{base}/grandchild").json()["metadata"].get("deletionTimestamp"))
    kube_endpoint.request("PATCH", f"{base}/grandchild", headers=MERGE,
                          data=json.dumps({"metadata": {"finalizers": None}}))
    for name in ("grandchild", "child", "owner"):
        wait_for(lambda n=name: kube_endpoint.request("GET", f"{base}/{n}").status_code == 404,
                 message=f"{name} not collected")


def test_dependent_of_a_missing_owner_is_collected(kube_endpoint, kube_namespace):
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    ghost = {"metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}}
    kube_endpoint.request("POST", base, json=_owned("orphan", ghost))
    wait_for(lambda: kube_endpoint.request("GET", f"{base}/orphan").status_code == 404)


def test_unsupported_requests_get_clear_errors(kube_endpoint, kube_namespace):
    assert kube_endpoint.request("GET", "/apis/nope.example.com/v1/things").status_code == 404
    put_collection = kube_endpoint.request("PUT", f"/api/v1/namespaces/{kube_namespace}/configmaps", json={})
    assert put_collection.status_code == 405 and put_collection.json()["reason"] == "MethodNotAllowed"
    bad_patch = kube_endpoint.request("PATCH", f"/api/v1/namespaces/{kube_namespace}/configmaps/x",
                                      headers={"Content-Type": "text/plain"}, data="x")
    assert bad_patch.status_code == 415
    unknown_sub = kube_endpoint.request("GET", f"/api/v1/namespaces/{kube_namespace}/configmaps/x/status")
    assert unknown_sub.status_code == 404
    protected = kube_endpoint.request("DELETE", "/api/v1/namespaces/default")
    assert protected.status_code == 403 and "may not be deleted" in protected.json()["message"]
