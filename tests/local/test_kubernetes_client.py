"""The official ``kubernetes`` Python client: typed core API, custom objects, watch, patches."""

from __future__ import annotations

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from localplane_support import GROUP, widget


@pytest.fixture
def api_client(kube_endpoint):
    with kube_endpoint.api_client() as api:
        yield api


def test_core_api_round_trip(api_client, kube_namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(kube_namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="cm", labels={"app": "x"}), data={"k": "v"}))
    listed = core.list_namespaced_config_map(kube_namespace, label_selector="app=x")
    assert [c.metadata.name for c in listed.items] == ["cm"]
    core.patch_namespaced_config_map("cm", kube_namespace, {"data": {"k": "w"}})
    assert core.read_namespaced_config_map("cm", kube_namespace).data == {"k": "w"}
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("absent", kube_namespace)
    assert missing.value.status == 404
    with pytest.raises(ApiException) as duplicate:
        core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "cm"}})
    assert duplicate.value.status == 409


def test_custom_objects_status_and_watch(api_client, kube_namespace, widget_crd):
    custom = client.CustomObjectsApi(api_client)
    created = custom.create_namespaced_custom_object(GROUP, "v1", kube_namespace, "widgets", widget("cw"))
    assert created["spec"]["replicas"] == 1
    custom.patch_namespaced_custom_object_status(GROUP, "v1", kube_namespace, "widgets", "cw",
                                                 {"status": {"replicas": 1}})
    custom.patch_namespaced_custom_object(GROUP, "v1", kube_namespace, "widgets", "cw", {"spec": {"replicas": 3}})
    seen = []
    stream = watch.Watch().stream(custom.list_namespaced_custom_object, GROUP, "v1", kube_namespace, "widgets",
                                  resource_version=created["metadata"]["resourceVersion"], timeout_seconds=1)
    for event in stream:
        seen.append((event["type"], event["object"].get("status", {}).get("replicas"),
                     event["object"]["spec"]["replicas"]))
    assert seen == [("MODIFIED", 1, 1), ("MODIFIED", 1, 3)]
    scale = custom.get_namespaced_custom_object_scale(GROUP, "v1", kube_namespace, "widgets", "cw")
    assert scale["spec"]["replicas"] == 3
    with pytest.raises(ApiException) as invalid:
        custom.patch_namespaced_custom_object(GROUP, "v1", kube_namespace, "widgets", "cw",
                                              {"spec": {"replicas": -5}})
    assert invalid.value.status == 422
