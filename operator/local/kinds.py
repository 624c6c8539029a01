"""What the real API server's per-kind strategies do for the built-in kinds served here."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from .errors import Cause, field_error

Obj = dict[str, Any]


def prepare_pod_create(pod: Obj) -> None:
    default_pod_spec(pod)
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(pod["spec"])}


def default_pod_spec(pod: Obj) -> None:
    """The API server's pod defaults, applied on every write (an apply that drops them gets them back)."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("enableServiceLinks", True)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("resources", {})


def _qos_class(spec: Obj) -> str:
    containers = spec.get("containers") or []
    requests_limits = [(c.get("resources") or {}) for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in requests_limits):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(res) is not None
        and (r.get("requests") or {}).get(res, (r.get("limits") or {}).get(res)) == (r.get("limits") or {}).get(res)
        for r in requests_limits for res in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def pod_errors(pod: Obj) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    errors = []
    containers = spec.get("containers")
    if not containers:
        errors.append(field_error(Cause.REQUIRED, "spec.containers", ""))
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            if not container.get("name"):
                errors.append(field_error(Cause.REQUIRED, f"spec.{group}[{i}].name", ""))
            elif container["name"] in names:
                errors.append(field_error(Cause.DUPLICATE, f"spec.{group}[{i}].name", "", container["name"]))
            names.add(container.get("name", ""))
            if not container.get("image"):
                errors.append(field_error(Cause.REQUIRED, f"spec.{group}[{i}].image", ""))
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        errors.append(field_error(Cause.NOT_SUPPORTED, "spec.restartPolicy",
                                  'supported values: "Always", "OnFailure", "Never"', spec.get("restartPolicy")))
    return errors


def pod_update_errors(old: Obj, new: Obj) -> list[dict[str, Any]]:
    """Pod specs are immutable except container images, activeDeadlineSeconds and added tolerations."""
    def mutable_view(spec: Obj) -> Obj:
        view = copy.deepcopy(spec)
        for group in ("initContainers", "containers"):
            for container in view.get(group) or []:
                container.pop("image", None)
        view.pop("activeDeadlineSeconds", None)
        view.pop("tolerations", None)
        if not old["spec"].get("nodeName"):
            view.pop("nodeName", None)
        return view

    if mutable_view(old.get("spec") or {}) != mutable_view(new.get("spec") or {}):
        return [field_error(Cause.FORBIDDEN, "spec", "pod updates may not change fields other than "
                            "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing "
                            "tolerations) or `spec.terminationGracePeriodSeconds`")]
    return []


class ClusterIPs:
    """ClusterIP allocation for Services from 10.96.0.0/16."""

    def __init__(self) -> None:
        self._network = ipaddress.ip_network("10.96.0.0/16")
        self._used: set[str] = set()
        self._next = 1

    def allocate(self) -> str:
        while True:
            ip = str(self._network[self._next])
            self._next = self._next % (self._network.num_addresses - 2) + 1
            if ip not in self._used:
                self._used.add(ip)
                return ip

    def release(self, ip: str | None) -> None:
        if ip:
            self._used.discard(ip)


def default_service_spec(service: Obj) -> None:
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def prepare_service_create(service: Obj, ips: ClusterIPs) -> None:
    default_service_spec(service)
    spec = service["spec"]
    if spec.get("clusterIP") != "None":
        spec["clusterIP"] = ips.allocate()
    spec["clusterIPs"] = [spec["clusterIP"]]
    service.setdefault("status", {"loadBalancer": {}})


def prepare_namespace_create(namespace: Obj) -> None:
    namespace["spec"] = {"finalizers": ["kubernetes"]}
    namespace["status"] = {"phase": "Active"}
    labels = namespace["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = namespace["metadata"]["name"]


# -- events: one storage, two views (core/v1 and events.k8s.io/v1) ------------------------------------------
def event_to_core(event: Obj) -> Obj:
    """An events.k8s.io/v1 Event in the core/v1 form it is stored in."""
    out = {k: v for k, v in event.items() if k not in ("regarding", "note", "deprecatedCount", "deprecatedSource",
                                                          "deprecatedFirstTimestamp", "deprecatedLastTimestamp")}
    out["apiVersion"] = "v1"
    out["involvedObject"] = event.get("regarding") or {}
    out["message"] = event.get("note", "")
    out["count"] = event.get("deprecatedCount", 1)
    out["source"] = event.get("deprecatedSource") or {"component": event.get("reportingController", "")}
    out["reportingComponent"] = event.get("reportingController", "")
    out["firstTimestamp"] = event.get("deprecatedFirstTimestamp")
    out["lastTimestamp"] = event.get("deprecatedLastTimestamp") or event.get("eventTime")
    return out


def event_from_core(event: Obj) -> Obj:
    """The events.k8s.io/v1 view of a stored core/v1 Event."""
    out = {k: v for k, v in event.items() if k not in ("involvedObject", "message", "count", "source",
                                                          "firstTimestamp", "lastTimestamp", "reportingComponent")}
    out["apiVersion"] = "events.k8s.io/v1"
    out["regarding"] = event.get("involvedObject") or {}
    if event.get("message") is not None:
        out["note"] = event["message"]
    out["deprecatedCount"] = event.get("count", 1)
    out["deprecatedSource"] = event.get("source") or {}
    out["deprecatedFirstTimestamp"] = event.get("firstTimestamp")
    out["deprecatedLastTimestamp"] = event.get("lastTimestamp")
    out["reportingController"] = event.get("reportingComponent") or (event.get("source") or {}).get("component", "")
    out.setdefault("eventTime", event.get("lastTimestamp") or event["metadata"].get("creationTimestamp"))
    return out
