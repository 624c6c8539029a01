"""Semantics checked through the in-process control plane (they need its knobs, e.g. history compaction)."""

from __future__ import annotations

import json

from localplane_support import WIDGETS, read_events, widget

from interp_operator.local.testing import wait_for


def test_watch_from_a_compacted_version_gets_410_expired(kube_endpoint, local_plane, widget_crd, kube_namespace):
    base = f"{WIDGETS}/namespaces/{kube_namespace}/widgets"
    old = kube_endpoint.request("POST", base, json=widget("old")).json()["metadata"]["resourceVersion"]
    kube_endpoint.request("POST", base, json=widget("new"))
    local_plane.call(local_plane.api.store.compact)
    events = read_events(kube_endpoint, base, {"resourceVersion": old, "timeoutSeconds": "1"})
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_deleting_a_crd_removes_its_objects_and_discovery(kube_endpoint, kube_namespace):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.tests.interp.dev"},
        "spec": {"group": "tests.interp.dev", "scope": "Cluster",
                 "names": {"plural": "gadgets", "kind": "Gadget"},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    assert kube_endpoint.request("POST", crds, json=crd).status_code == 201
    gadgets = "/apis/tests.interp.dev/v1alpha1/gadgets"
    made = kube_endpoint.request("POST", gadgets, json={"apiVersion": "tests.interp.dev/v1alpha1", "kind": "Gadget",
                                                        "metadata": {"name": "g"}, "anything": [1, 2]})
    assert made.status_code == 201 and made.json()["anything"] == [1, 2]
    assert kube_endpoint.request("DELETE", f"{crds}/gadgets.tests.interp.dev").status_code in (200, 202)
    wait_for(lambda: kube_endpoint.request("GET", gadgets).status_code == 404)
    versions = [v["version"] for g in kube_endpoint.request("GET", "/apis").json()["groups"]
                if g["name"] == "tests.interp.dev" for v in g["versions"]]
    assert "v1alpha1" not in versions


def test_invalid_crd_is_rejected(kube_endpoint):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "broken.tests.interp.dev"},
        "spec": {"group": "tests.interp.dev", "scope": "Namespaced", "names": {"plural": "broken", "kind": "Broken"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-validations": [
                         {"rule": "self.a >"}]}}}}}]},
    }
    response = kube_endpoint.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
    assert response.status_code == 422 and "compilation failed" in response.text


def test_namespace_deletion_removes_its_content(kube_endpoint, widget_crd):
    ns = "doomed"
    assert kube_endpoint.request("POST", "/api/v1/namespaces", json={"metadata": {"name": ns}}).status_code == 201
    base = f"{WIDGETS}/namespaces/{ns}/widgets"
    held = widget("held")
    held["metadata"]["finalizers"] = ["tests.interp.dev/hold"]
    kube_endpoint.request("POST", base, json=held)
    kube_endpoint.request("POST", base, json=widget("free"))
    kube_endpoint.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": "c"}})
    assert kube_endpoint.request("DELETE", f"/api/v1/namespaces/{ns}").status_code in (200, 202)
    terminating = kube_endpoint.request("GET", f"/api/v1/namespaces/{ns}").json()
    assert terminating["status"]["phase"] == "Terminating"
    refused = kube_endpoint.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": "x"}})
    assert refused.status_code == 403
    wait_for(lambda: kube_endpoint.request("GET", f"{base}/free").status_code == 404)
    assert kube_endpoint.request("GET", f"/api/v1/namespaces/{ns}").status_code == 200  # "held" holds it
    kube_endpoint.request("PATCH", f"{base}/held", headers={"Content-Type": "application/merge-patch+json"},
                          data=json.dumps({"metadata": {"finalizers": None}}))
    wait_for(lambda: kube_endpoint.request("GET", f"/api/v1/namespaces/{ns}").status_code == 404,
             message="namespace not removed after its content went")
