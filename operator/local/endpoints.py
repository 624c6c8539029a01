"""Endpoints and EndpointSlices of Services with a selector, kept in step with their pods as the
endpoints and endpointslice controllers do (addresses of ready pods, not-ready ones apart)."""

from __future__ import annotations

import copy
from typing import Any

from .api import Api

Obj = dict[str, Any]
MANAGED_BY = "endpointslice-controller.k8s.io"


def _ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _ports(service: Obj) -> list[Obj]:
    out = []
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        entry = {"port": target if isinstance(target, int) else port.get("port"),
                 "protocol": port.get("protocol", "TCP")}
        if port.get("name"):
            entry["name"] = port["name"]
        out.append(entry)
    return out


def desired(service: Obj, pods: list[Obj]) -> tuple[Obj, Obj]:
    md = service["metadata"]
    selector = service["spec"]["selector"]
    publish_all = service["spec"].get("publishNotReadyAddresses", False)
    members = sorted((p for p in pods if p["metadata"].get("namespace") == md["namespace"]
                      and (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
                      and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())),
                     key=lambda p: p["metadata"]["name"])
    ready: list[Obj] = []
    not_ready: list[Obj] = []
    slice_endpoints: list[Obj] = []
    for pod in members:
        ref = {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": md["namespace"],
               "uid": pod["metadata"]["uid"]}
        address: Obj = {"ip": pod["status"]["podIP"], "nodeName": pod["spec"].get("nodeName", ""),
                        "targetRef": ref}
        if pod["spec"].get("hostname"):
            address["hostname"] = pod["spec"]["hostname"]
        is_ready = _ready(pod) or publish_all
        (ready if is_ready else not_ready).append(address)
        slice_endpoints.append({"addresses": [pod["status"]["podIP"]], "targetRef": ref,
                                "nodeName": pod["spec"].get("nodeName", ""),
                                "conditions": {"ready": is_ready, "serving": is_ready, "terminating": False}})
    subset: Obj = {"ports": _ports(service)}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    owner = {"apiVersion": "v1", "kind": "Service", "name": md["name"], "uid": md["uid"],
             "controller": True, "blockOwnerDeletion": True}
    labels = {**(md.get("labels") or {}), "endpoints.kubernetes.io/managed-by": "endpoint-controller"}
    endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                 "metadata": {"name": md["name"], "namespace": md["namespace"], "labels": labels},
                 "subsets": [subset] if (ready or not_ready) else []}
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{md['name']}-local", "namespace": md["namespace"], "ownerReferences": [owner],
                     "labels": {"kubernetes.io/service-name": md["name"],
                                "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": "IPv4", "endpoints": slice_endpoints, "ports": _ports(service),
    }
    return endpoints, endpoint_slice


def sync(api: Api) -> None:
    pods = list(api.store.items("/pods"))
    services = list(api.store.items("/services"))
    names = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services}
    rt = api.registry.get("", "v1", "endpoints")
    for stale in list(api.store.items("/endpoints")):
        md = stale["metadata"]
        managed = (md.get("labels") or {}).get("endpoints.kubernetes.io/managed-by") == "endpoint-controller"
        if managed and (md["namespace"], md["name"]) not in names:
            api.delete(rt, md["namespace"], md["name"])
    for service in services:
        if not (service.get("spec") or {}).get("selector") or service["metadata"].get("deletionTimestamp"):
            continue
        for rt_args, obj in zip((("", "v1", "endpoints"), ("discovery.k8s.io", "v1", "endpointslices")),
                                desired(service, pods), strict=True):
            _apply(api, rt_args, obj)


def _apply(api: Api, rt_args: tuple[str, str, str], obj: Obj) -> None:
    rt = api.registry.get(*rt_args)
    md = obj["metadata"]
    current = api.store.get(rt.storage_key, (md["namespace"], md["name"]))
    if current is None:
        api.create(rt, md["namespace"], obj)
        return
    body = {k: v for k, v in obj.items() if k != "metadata"}
    if all(current.get(k) == v for k, v in body.items()):
        return
    new = copy.deepcopy(current)
    new.update(copy.deepcopy(body))
    api.store.put(rt.storage_key, new)
