"""Resource types served by the API server: the built-in kinds and those registered by CRDs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError


@dataclass
class ScaleSpec:
    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str | None = None


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    scale: ScaleSpec | None = None
    extra_subresources: tuple[str, ...] = ()
    # openAPIV3Schema of a custom resource version; None for built-in kinds (no server-side schema).
    schema: dict[str, Any] | None = None
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    selectable_fields: list[str] = field(default_factory=list)
    field_labels: tuple[str, ...] = ()
    # Served versions share one storage: the other versions of the same group/plural.
    storage_key: str = ""

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()
        if not self.storage_key:
            self.storage_key = f"{self.group}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def is_custom(self) -> bool:
        return self.schema is not None

    def discovery_entries(self) -> list[dict[str, Any]]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        main: dict[str, Any] = {
            "name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
            "kind": self.kind, "verbs": verbs,
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.status_subresource:
            entries.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                            "kind": self.kind, "verbs": ["get", "patch", "update"]})
        if self.scale is not None:
            entries.append({"name": f"{self.plural}/scale", "singularName": "", "namespaced": self.namespaced,
                            "group": "autoscaling", "version": "v1", "kind": "Scale",
                            "verbs": ["get", "patch", "update"]})
        for sub in self.extra_subresources:
            entries.append({"name": f"{self.plural}/{sub}", "singularName": "", "namespaced": self.namespaced,
                            "kind": "Pod" if sub in ("log", "binding") else self.kind, "verbs": ["get"]})
        return entries


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
               "status.phase", "status.podIP", "status.nominatedNodeName")
_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                 "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                 "reason", "reportingComponent", "source", "type")


def builtin_types() -> list[ResourceType]:
    core = [
        ResourceType("", "v1", "namespaces", "Namespace", False, short_names=["ns"], status_subresource=True,
                     field_labels=("status.phase",)),
        ResourceType("", "v1", "pods", "Pod", True, short_names=["po"], categories=["all"], status_subresource=True,
                     extra_subresources=("log",), field_labels=_POD_FIELDS),
        ResourceType("", "v1", "services", "Service", True, short_names=["svc"], categories=["all"],
                     status_subresource=True),
        ResourceType("", "v1", "endpoints", "Endpoints", True, short_names=["ep"]),
        ResourceType("", "v1", "events", "Event", True, short_names=["ev"], field_labels=_EVENT_FIELDS),
        ResourceType("", "v1", "nodes", "Node", False, short_names=["no"], status_subresource=True,
                     field_labels=("spec.unschedulable",)),
        ResourceType("", "v1", "configmaps", "ConfigMap", True, short_names=["cm"]),
        ResourceType("", "v1", "secrets", "Secret", True, field_labels=("type",)),
        ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, short_names=["pvc"],
                     status_subresource=True),
        ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, short_names=["sa"]),
    ]
    others = [
        ResourceType("events.k8s.io", "v1", "events", "Event", True, short_names=["ev"],
                     storage_key="/events", field_labels=_EVENT_FIELDS),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
        ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
        ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
                     short_names=["crd", "crds"], categories=["api-extensions"], status_subresource=True),
    ]
    return core + others


class Registry:
    """Group/version/plural → ResourceType, with the lookups discovery and routing need."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in builtin_types():
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove_group_plural(self, group: str, plural: str) -> list[ResourceType]:
        gone = [rt for key, rt in self._types.items() if key[0] == group and key[2] == plural]
        for rt in gone:
            del self._types[(rt.group, rt.version, rt.plural)]
        return gone

    def get(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self._types.get((group, version, plural))
        if rt is None:
            where = f"{group}/{version}" if group else version
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural} in {where})")
        return rt

    def has_version(self, group: str, version: str) -> bool:
        return any(k[0] == group and k[1] == version for k in self._types)

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[str]]:
        """Non-core groups → served versions (preferred first)."""
        out: dict[str, list[str]] = {}
        for group, version, _ in self._types:
            if group and version not in out.setdefault(group, []):
                out[group].append(version)
        for versions in out.values():
            versions.sort(key=_version_priority)
        return out

    def in_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for k, rt in self._types.items() if k[0] == group and k[1] == version]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA before beta before alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major, stage, minor = int(m.group(1)), m.group(2), int(m.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor)
