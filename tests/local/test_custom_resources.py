"""Custom-resource semantics through plain HTTP only, so that the same tests can run against a real server."""

from __future__ import annotations

import copy
import json

import pytest
from localplane_support import GROUP, WIDGETS, widget

from interp_operator.local.testing import KubeEndpoint

MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}
APPLY = {"Content-Type": "application/apply-patch+yaml"}


@pytest.fixture
def widgets(kube_endpoint: KubeEndpoint, widget_crd: str, kube_namespace: str) -> str:
    return f"{WIDGETS}/namespaces/{kube_namespace}/widgets"


def create(endpoint: KubeEndpoint, base: str, body: dict) -> dict:
    response = endpoint.request("POST", base, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_discovery_lists_the_custom_resource_with_subresources(kube_endpoint, widget_crd):
    groups = kube_endpoint.request("GET", "/apis").json()["groups"]
    assert any(g["name"] == GROUP and g["preferredVersion"]["version"] == "v1" for g in groups)
    resources = {r["name"]: r for r in kube_endpoint.request("GET", WIDGETS).json()["resources"]}
    main = resources["widgets"]
    assert main["kind"] == "Widget" and main["namespaced"] is True
    assert main["shortNames"] == ["wdg"] and "interptest" in main["categories"]
    assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(main["verbs"])
    assert "widgets/status" in resources
    assert resources["widgets/scale"]["kind"] == "Scale"


def test_create_sets_metadata_defaults_and_prunes(kube_endpoint, widgets):
    body = widget("w1", ports=[{"name": "http", "port": 80}], bogus=1, extra={"anything": {"goes": [1]}})
    body["status"] = {"replicas": 9}
    obj = create(kube_endpoint, widgets, body)
    md = obj["metadata"]
    assert md["uid"] and md["resourceVersion"].isdigit() and md["generation"] == 1 and md["creationTimestamp"]
    assert obj["spec"]["replicas"] == 1 and obj["spec"]["mode"] == "fast" and obj["spec"]["minReplicas"] == 0
    assert obj["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}]
    assert "bogus" not in obj["spec"]
    assert obj["spec"]["extra"] == {"anything": {"goes": [1]}}
    assert "status" not in obj  # the status subresource owns status: a create cannot set it
    assert kube_endpoint.request("GET", f"{widgets}/w1").json()["metadata"]["uid"] == md["uid"]


def test_generate_name_and_conflicting_names(kube_endpoint, widgets):
    body = widget("")
    body["metadata"] = {"generateName": "gen-"}
    obj = create(kube_endpoint, widgets, body)
    assert obj["metadata"]["name"].startswith("gen-") and len(obj["metadata"]["name"]) == len("gen-") + 5
    create(kube_endpoint, widgets, widget("dup"))
    again = kube_endpoint.request("POST", widgets, json=widget("dup"))
    assert again.status_code == 409
    assert again.json()["reason"] == "AlreadyExists" and again.json()["kind"] == "Status"
    missing = kube_endpoint.request("GET", f"{widgets}/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    assert missing.json()["details"]["name"] == "nope"


INVALID_CASES = [
    ("missing required", {"image": None}, "spec.image", "Required value"),
    ("below minimum", {"replicas": -1}, "spec.replicas", "should be greater than or equal to 0"),
    ("above maximum", {"replicas": 101}, "spec.replicas", "should be less than or equal to 100"),
    ("wrong type", {"replicas": "three"}, "spec.replicas", "must be of type integer"),
    ("not in enum", {"mode": "warp"}, "spec.mode", "Unsupported value"),
    ("min length", {"image": ""}, "spec.image", "at least 1 chars long"),
    ("CEL on object", {"replicas": 2, "minReplicas": 3}, "spec", "minReplicas must not exceed replicas"),
    ("CEL on list items", {"ports": [{"name": "a", "port": 70000}]}, "spec.ports[0]", "port out of range"),
    ("CEL all() macro", {"layers": [1, -2]}, "spec.layers", "layers are non-negative"),
    ("maxItems", {"layers": [1, 2, 3, 4, 5]}, "spec.layers", "must have at most 4 items"),
    ("list-map duplicate key", {"ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]}, "spec.ports[1]",
     "Duplicate value"),
    ("set duplicate", {"tags": ["x", "x"]}, "spec.tags[1]", "Duplicate value"),
]


@pytest.mark.parametrize(("case", "spec", "field", "text"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_objects_are_rejected_with_field_causes(kube_endpoint, widgets, case, spec, field, text):
    body = widget("bad")
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key)
        else:
            body["spec"][key] = value
    response = kube_endpoint.request("POST", widgets, json=body)
    assert response.status_code == 422, response.text
    status = response.json()
    assert status["reason"] == "Invalid" and status["details"]["kind"] == "Widget"
    causes = status["details"]["causes"]
    assert any(c["field"] == field and text in c["message"] for c in causes), causes
    assert text in status["message"]


def test_transition_rules_use_old_self(kube_endpoint, widgets):
    obj = create(kube_endpoint, widgets, widget("t", owner="alice", mode="pinned", replicas=3))
    obj["spec"]["owner"] = "bob"
    response = kube_endpoint.request("PUT", f"{widgets}/t", json=obj)
    assert response.status_code == 422 and "owner is immutable" in response.text
    response = kube_endpoint.request("PATCH", f"{widgets}/t", headers=MERGE, data=json.dumps(
        {"spec": {"replicas": 2}}))
    assert response.status_code == 422
    cause = response.json()["details"]["causes"][0]
    assert cause["reason"] == "FieldValueForbidden" and "cannot scale down" in cause["message"]
    ok = kube_endpoint.request("PATCH", f"{widgets}/t", headers=MERGE, data=json.dumps({"spec": {"replicas": 4}}))
    assert ok.status_code == 200 and ok.json()["spec"]["replicas"] == 4


def test_put_requires_the_current_resource_version(kube_endpoint, widgets):
    obj = create(kube_endpoint, widgets, widget("v"))
    stale = copy.deepcopy(obj)
    obj["spec"]["replicas"] = 2
    updated = kube_endpoint.request("PUT", f"{widgets}/v", json=obj)
    assert updated.status_code == 200
    assert int(updated.json()["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])
    stale["spec"]["replicas"] = 3
    conflict = kube_endpoint.request("PUT", f"{widgets}/v", json=stale)
    assert conflict.status_code == 409 and conflict.json()["reason"] == "Conflict"
    assert "the object has been modified" in conflict.json()["message"]
    unversioned = copy.deepcopy(updated.json())
    del unversioned["metadata"]["resourceVersion"]
    assert kube_endpoint.request("PUT", f"{widgets}/v", json=unversioned).status_code == 422


def test_generation_counts_spec_changes_only(kube_endpoint, widgets):
    obj = create(kube_endpoint, widgets, widget("g"))
    path = f"{widgets}/g"

    def patch(body, sub=""):
        response = kube_endpoint.request("PATCH", path + sub, headers=MERGE, data=json.dumps(body))
        assert response.status_code == 200, response.text
        return response.json()

    assert patch({"metadata": {"labels": {"a": "b"}}})["metadata"]["generation"] == 1
    assert patch({"status": {"replicas": 1}}, "/status")["metadata"]["generation"] == 1
    after_spec = patch({"spec": {"replicas": 5}})
    assert after_spec["metadata"]["generation"] == 2
    same = patch({"spec": {"replicas": 5}})
    assert same["metadata"]["resourceVersion"] == after_spec["metadata"]["resourceVersion"]  # no-op: no write
    assert obj["metadata"]["uid"] == same["metadata"]["uid"]


def test_status_subresource_splits_spec_and_status(kube_endpoint, widgets):
    create(kube_endpoint, widgets, widget("s"))
    path = f"{widgets}/s"
    main = kube_endpoint.request("PATCH", path, headers=MERGE, data=json.dumps(
        {"spec": {"replicas": 2}, "status": {"replicas": 7}})).json()
    assert main["spec"]["replicas"] == 2 and "status" not in main
    status = kube_endpoint.request("PATCH", path + "/status", headers=MERGE, data=json.dumps(
        {"spec": {"replicas": 9}, "status": {"replicas": 2, "conditions": [{"type": "Ready", "status": "True"}]}}))
    assert status.status_code == 200, status.text
    assert status.json()["spec"]["replicas"] == 2 and status.json()["status"]["replicas"] == 2
    full = kube_endpoint.request("GET", path + "/status").json()
    full["status"]["replicas"] = "x"
    bad = kube_endpoint.request("PUT", path + "/status", json=full)
    assert bad.status_code == 422 and "status.replicas" in bad.text


def test_scale_subresource(kube_endpoint, widgets):
    create(kube_endpoint, widgets, widget("sc", replicas=2))
    path = f"{widgets}/sc"
    kube_endpoint.request("PATCH", path + "/status", headers=MERGE, data=json.dumps(
        {"status": {"replicas": 2, "selector": "app=sc"}}))
    scale = kube_endpoint.request("GET", path + "/scale").json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 2 and scale["status"] == {"replicas": 2, "selector": "app=sc"}
    scale["spec"]["replicas"] = 4
    put = kube_endpoint.request("PUT", path + "/scale", json=scale)
    assert put.status_code == 200 and put.json()["spec"]["replicas"] == 4
    patched = kube_endpoint.request("PATCH", path + "/scale", headers=MERGE, data=json.dumps(
        {"spec": {"replicas": 6}}))
    assert patched.json()["spec"]["replicas"] == 6
    obj = kube_endpoint.request("GET", path).json()
    assert obj["spec"]["replicas"] == 6 and obj["metadata"]["generation"] == 3
    too_many = kube_endpoint.request("PATCH", path + "/scale", headers=MERGE, data=json.dumps(
        {"spec": {"replicas": 1000}}))
    assert too_many.status_code == 422


def test_merge_and_json_patches(kube_endpoint, widgets):
    obj = create(kube_endpoint, widgets, widget("p", tags=["a"], extra={"k": 1, "drop": 2}))
    path = f"{widgets}/p"
    merged = kube_endpoint.request("PATCH", path, headers=MERGE, data=json.dumps(
        {"spec": {"extra": {"drop": None, "new": 3}}})).json()
    assert merged["spec"]["extra"] == {"k": 1, "new": 3}
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": merged["metadata"]["resourceVersion"]},
           {"op": "add", "path": "/spec/tags/-", "value": "b"},
           {"op": "replace", "path": "/spec/replicas", "value": 3}]
    patched = kube_endpoint.request("PATCH", path, headers=JSONPATCH, data=json.dumps(ops))
    assert patched.status_code == 200, patched.text
    assert patched.json()["spec"]["tags"] == ["a", "b"] and patched.json()["spec"]["replicas"] == 3
    stale_test = [{"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]},
                  {"op": "replace", "path": "/spec/replicas", "value": 4}]
    assert kube_endpoint.request("PATCH", path, headers=JSONPATCH, data=json.dumps(stale_test)).status_code == 422
    stale_rv = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"replicas": 4}}
    assert kube_endpoint.request("PATCH", path, headers=MERGE, data=json.dumps(stale_rv)).status_code == 409
    strategic = kube_endpoint.request("PATCH", path, headers={"Content-Type": "application/strategic-merge-patch+json"},
                                      data="{}")
    assert strategic.status_code == 415
    missing = kube_endpoint.request("PATCH", f"{widgets}/absent", headers=MERGE, data="{}")
    assert missing.status_code == 404


def _apply(endpoint, path, manager, body, force=False):
    params = {"fieldManager": manager}
    if force:
        params["force"] = "true"
    return endpoint.request("PATCH", path, headers=APPLY, params=params, data=json.dumps(body))


def test_server_side_apply_ownership_conflicts_and_list_maps(kube_endpoint, widgets):
    path = f"{widgets}/ssa"
    created = _apply(kube_endpoint, path, "alice", widget("ssa", replicas=2, ports=[{"name": "a", "port": 1}]))
    assert created.status_code == 201, created.text
    managers = {m["manager"]: m for m in created.json()["metadata"]["managedFields"]}
    assert managers["alice"]["operation"] == "Apply"
    assert "f:replicas" in managers["alice"]["fieldsV1"]["f:spec"]
    bob = _apply(kube_endpoint, path, "bob", {"apiVersion": f"{GROUP}/v1", "kind": "Widget",
                                              "spec": {"image": "local", "ports": [{"name": "b", "port": 2}]}})
    assert bob.status_code == 200, bob.text
    assert sorted(p["name"] for p in bob.json()["spec"]["ports"]) == ["a", "b"]
    conflict = _apply(kube_endpoint, path, "bob", {"apiVersion": f"{GROUP}/v1", "kind": "Widget",
                                                   "spec": {"image": "local", "replicas": 5,
                                                            "ports": [{"name": "b", "port": 2}]}})
    assert conflict.status_code == 409 and conflict.json()["reason"] == "Conflict"
    assert "alice" in conflict.json()["message"] and ".spec.replicas" in conflict.json()["message"]
    forced = _apply(kube_endpoint, path, "bob", {"apiVersion": f"{GROUP}/v1", "kind": "Widget",
                                                 "spec": {"image": "local", "replicas": 5,
                                                          "ports": [{"name": "b", "port": 2}]}}, force=True)
    assert forced.status_code == 200 and forced.json()["spec"]["replicas"] == 5
    # alice stops applying port "a" (and replicas, now bob's): "a" goes, bob's "b" stays.
    again = _apply(kube_endpoint, path, "alice", widget("ssa"))
    assert again.status_code == 200, again.text
    assert [p["name"] for p in again.json()["spec"]["ports"]] == ["b"]
    assert again.json()["spec"]["replicas"] == 5


def test_list_with_selectors_and_pagination(kube_endpoint, widgets):
    for i in range(5):
        body = widget(f"l{i}")
        body["metadata"]["labels"] = {"tier": "a" if i < 3 else "b", "idx": str(i)}
        create(kube_endpoint, widgets, body)
    def names(**params):
        response = kube_endpoint.request("GET", widgets, params=params)
        assert response.status_code == 200, response.text
        return sorted(o["metadata"]["name"] for o in response.json()["items"])

    assert names(labelSelector="tier=a") == ["l0", "l1", "l2"]
    assert names(labelSelector="tier!=a") == ["l3", "l4"]
    assert names(labelSelector="idx in (1,4),tier") == ["l1", "l4"]
    assert names(labelSelector="!tier") == []
    assert names(fieldSelector="metadata.name=l2") == ["l2"]
    assert names(fieldSelector="metadata.name!=l2") == ["l0", "l1", "l3", "l4"]
    bad = kube_endpoint.request("GET", widgets, params={"fieldSelector": "spec.image=local"})
    assert bad.status_code == 400 and "field label not supported" in bad.text
    first = kube_endpoint.request("GET", widgets, params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    rest = kube_endpoint.request("GET", widgets, params={"limit": 10, "continue": first["metadata"]["continue"]})
    assert len(rest.json()["items"]) == 3 and not rest.json()["metadata"].get("continue")


def test_finalizers_hold_deletion(kube_endpoint, widgets):
    body = widget("f")
    body["metadata"]["finalizers"] = ["tests.interp.dev/hold"]
    create(kube_endpoint, widgets, body)
    path = f"{widgets}/f"
    deleting = kube_endpoint.request("DELETE", path)
    assert deleting.status_code in (200, 202)
    obj = kube_endpoint.request("GET", path).json()
    assert obj["metadata"]["deletionTimestamp"] and obj["metadata"]["generation"] == 2
    add = kube_endpoint.request("PATCH", path, headers=MERGE, data=json.dumps(
        {"metadata": {"finalizers": ["tests.interp.dev/hold", "another"]}}))
    assert add.status_code == 422
    obj["spec"]["replicas"] = 3  # updates still go through while deleting
    assert kube_endpoint.request("PUT", path, json=obj).status_code == 200
    done = kube_endpoint.request("PATCH", path, headers=MERGE, data=json.dumps({"metadata": {"finalizers": None}}))
    assert done.status_code == 200
    assert kube_endpoint.request("GET", path).status_code == 404


def test_delete_preconditions(kube_endpoint, widgets):
    obj = create(kube_endpoint, widgets, widget("pre"))
    wrong = kube_endpoint.request("DELETE", f"{widgets}/pre", json={"preconditions": {"uid": "not-it"}})
    assert wrong.status_code == 409
    right = kube_endpoint.request("DELETE", f"{widgets}/pre", json={"preconditions": {"uid": obj["metadata"]["uid"]}})
    assert right.status_code == 200
    assert kube_endpoint.request("DELETE", f"{widgets}/pre").status_code == 404


def test_dry_run_and_delete_collection(kube_endpoint, widgets):
    dry = kube_endpoint.request("POST", widgets, params={"dryRun": "All"}, json=widget("ghost"))
    assert dry.status_code == 201 and dry.json()["spec"]["replicas"] == 1
    assert kube_endpoint.request("GET", f"{widgets}/ghost").status_code == 404
    for i in range(3):
        body = widget(f"dc{i}")
        body["metadata"]["labels"] = {"batch": "yes" if i < 2 else "no"}
        create(kube_endpoint, widgets, body)
    gone = kube_endpoint.request("DELETE", widgets, params={"labelSelector": "batch=yes"})
    assert gone.status_code == 200
    left = [o["metadata"]["name"] for o in kube_endpoint.request("GET", widgets).json()["items"]]
    assert left == ["dc2"]


def test_field_validation_directives(kube_endpoint, widgets):
    body = widget("fv")
    body["spec"]["bogus"] = 1
    strict = kube_endpoint.request("POST", widgets, params={"fieldValidation": "Strict"}, json=body)
    assert strict.status_code == 400 and 'unknown field "spec.bogus"' in strict.json()["message"]
    warned = kube_endpoint.request("POST", widgets, params={"fieldValidation": "Warn"}, json=body)
    assert warned.status_code == 201 and "bogus" not in warned.json()["spec"]
    assert 'unknown field \\"spec.bogus\\"' in warned.headers.get("Warning", "")
    body["metadata"]["name"] = "fv2"
    ignored = kube_endpoint.request("POST", widgets, params={"fieldValidation": "Ignore"}, json=body)
    assert ignored.status_code == 201 and "Warning" not in ignored.headers
