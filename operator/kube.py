"""The one module that talks to the Kubernetes API (everything else is pure).

Creates are idempotent (409 AlreadyExists is success: a crashed reconcile may have created the object already);
deletes are idempotent (404 is success). Pods are created concurrently: a 256-pod gang is one reconcile. Every
request has a timeout: the client library's default is none, and a request on a connection that died silently would
hold its object's reconcile loop forever.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .api import GROUP, VERSION, KindInfo

CREATE_WORKERS = 16
REQUEST_TIMEOUT_S = 30
_CALL: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S}
"""Every typed call: the raw response (decoding is done here, cheaply), and a timeout."""
_COLLECTIONS = {"Pod": "pods", "Service": "services", "ConfigMap": "configmaps", "PodGroup": "podgroups"}
MERGE_PATCH = "application/merge-patch+json"
_POD_GROUPS = {
    "scheduling.volcano.sh/v1beta1": ("scheduling.volcano.sh", "v1beta1", "podgroups"),
    "scheduling.x-k8s.io/v1alpha1": ("scheduling.x-k8s.io", "v1alpha1", "podgroups"),
}


def api_client() -> client.ApiClient:
    """The API client of the operator's own identity: the pod's service account in a cluster, else $KUBECONFIG
    (read now: the client library's default is fixed when it is first imported)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()



class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self._pool = ThreadPoolExecutor(CREATE_WORKERS, thread_name_prefix="kube-create")

    # -- writes of dependent objects --------------------------------------------------------------------------
    def create(self, obj: Mapping[str, Any]) -> bool:
        """Create ``obj``; False if it already existed."""
        namespace = obj["metadata"]["namespace"]
        if obj["kind"] not in _COLLECTIONS:
            raise ValueError(f"the operator does not create {obj['kind']} objects")
        if obj["kind"] == "PodGroup":
            group, version, plural = _POD_GROUPS[obj["apiVersion"]]
            path = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}"
        else:
            path = f"/api/v1/namespaces/{namespace}/{_COLLECTIONS[obj['kind']]}"
        response = self._post(path, obj)
        if response.status == 409:
            return False
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return True

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        # The typed methods validate every argument with pydantic, which costs more than the request itself; creates
        # are the hot path of a large gang, so they go through the client's serializer and transport directly.
        method, url, headers, payload, post = self.api_client.param_serialize(
            "POST", path, header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=dict(body), auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(method, url, header_params=headers, body=payload, post_params=post,
                                            _request_timeout=REQUEST_TIMEOUT_S)
        response.read()
        return response

    def create_all(self, objects: Iterable[Mapping[str, Any]]) -> int:
        """Create concurrently; returns how many were new. The first failure is raised after all finished."""
        results = list(self._pool.map(self._try_create, objects))
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        return sum(1 for r in results if r is True)

    def _try_create(self, obj: Mapping[str, Any]) -> bool | Exception:
        try:
            return self.create(obj)
        except Exception as err:  # collected and re-raised by create_all
            return err

    def replace_config_map(self, obj: Mapping[str, Any]) -> None:
        """Create the ConfigMap, or overwrite its data when it exists (the config changes with each attempt)."""
        if not self.create(obj):
            meta = obj["metadata"]
            self.core.patch_namespaced_config_map(meta["name"], meta["namespace"], {"data": obj["data"]},
                                                  **_CALL)

    def delete_pods(self, namespace: str, names: Iterable[str]) -> None:
        for name in names:
            try:
                self.core.delete_namespaced_pod(name, namespace, **_CALL)
            except ApiException as err:
                if err.status != 404:
                    raise

    def annotate_pods(self, namespace: str, names: Iterable[str], annotations: Mapping[str, str | None]) -> None:
        for name in names:
            try:
                self.core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": dict(annotations)}},
                                               **_CALL)
            except ApiException as err:
                if err.status != 404:
                    raise

    # -- events -----------------------------------------------------------------------------------------------
    def post_event(self, namespace: str, body: Mapping[str, Any]) -> str | None:
        """Create an Event; its name, or None when the server refused it (a terminating namespace)."""
        response = self._post(f"/api/v1/namespaces/{namespace}/events", body)
        if not 200 <= response.status < 300:
            return None
        return str(json.loads(response.data)["metadata"]["name"])

    def bump_event(self, namespace: str, name: str, count: int, last_timestamp: str) -> bool:
        """Fold a repeat into Event ``name``; False when it is gone (expired: post a new one)."""
        try:
            self.core.patch_namespaced_event(name, namespace, {"count": count, "lastTimestamp": last_timestamp},
                                             _content_type=MERGE_PATCH, **_CALL)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    # -- the custom resources ---------------------------------------------------------------------------------
    def patch_status(self, info: KindInfo, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, info.plural, name, {"status": dict(status)},
            _content_type=MERGE_PATCH, **_CALL,
        )

    def get(self, info: KindInfo, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name,
                                                                **_CALL)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return json.loads(response.data)  # type: ignore[no-any-return]

    def delete(self, info: KindInfo, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name,
                                                        propagation_policy="Background", **_CALL)
        except ApiException as err:
            if err.status != 404:
                raise
