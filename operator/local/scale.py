"""The scale subresource of custom resources (autoscaling/v1 Scale), as declared by the CRD."""

from __future__ import annotations

import copy
from typing import Any

from .api import PATCH_TYPES, Api
from .errors import ApiError, Cause, bad_request, conflict, field_error, invalid, not_found
from .patch import json_patch, merge_patch
from .registry import ResourceType

Obj = dict[str, Any]


def get_scale(api: Api, rt: ResourceType, namespace: str | None, name: str) -> Obj:
    if rt.scale is None:
        raise not_found(rt.group, f"{rt.plural}/scale", name)
    obj = api.get(rt, namespace, name)
    spec_path = rt.scale.spec_replicas_path
    status = {"replicas": _path_get(obj, rt.scale.status_replicas_path) or 0}
    if rt.scale.label_selector_path:
        selector = _path_get(obj, rt.scale.label_selector_path)
        if selector is not None:
            status["selector"] = selector
    md = obj["metadata"]
    return {"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": md["name"], "namespace": md.get("namespace"), "uid": md["uid"],
                         "resourceVersion": md["resourceVersion"],
                         "creationTimestamp": md["creationTimestamp"]},
            "spec": {"replicas": _path_get(obj, spec_path) or 0}, "status": status}

def update_scale(api: Api, rt: ResourceType, namespace: str | None, name: str, scale: Any, *,
                 manager: str = "", dry_run: bool = False) -> Obj:
    if rt.scale is None:
        raise not_found(rt.group, f"{rt.plural}/scale", name)
    if not isinstance(scale, dict):
        raise bad_request("the request body must be a Scale object")
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid("autoscaling", "Scale", name, [field_error(
            Cause.INVALID, "spec.replicas", "must be greater than or equal to 0", replicas)])
    old = api.get(rt, namespace, name)
    wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")
    if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
        raise conflict(rt.group, rt.plural, name, "the object has been modified; please apply your changes to "
                       "the latest version and try again")
    new = copy.deepcopy(old)
    _path_set(new, rt.scale.spec_replicas_path, replicas)
    api._write(rt, old, new, "", manager, dry_run)
    return get_scale(api, rt, namespace, name)

def patch_scale(api: Api, rt: ResourceType, namespace: str | None, name: str, content_type: str, body: Any, *,
                manager: str = "", dry_run: bool = False) -> Obj:
    current = get_scale(api, rt, namespace, name)
    kind = PATCH_TYPES.get(content_type.split(";")[0].strip())
    if kind == "json":
        patched = json_patch(current, body)
    elif kind in ("merge", "strategic", "apply"):
        patched = merge_patch(current, body)
    else:
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
    return update_scale(api, rt, namespace, name, patched, manager=manager, dry_run=dry_run)


def _path_get(obj: Obj, path: str) -> Any:
    node: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _path_set(obj: Obj, path: str, value: Any) -> None:
    parts = path.lstrip(".").split(".")
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
