"""Discovery documents (/api, /apis, per group-version resource lists) and /version."""

from __future__ import annotations

from typing import Any

from .registry import Registry

SERVER_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-interp-local", "gitCommit": "",
                  "gitTreeState": "clean", "buildDate": "", "goVersion": "python", "compiler": "interp-local",
                  "platform": "linux/amd64"}


def core_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_list(registry: Registry) -> dict[str, Any]:
    groups = registry.groups()
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(name, versions) for name, versions in sorted(groups.items())]}


def group(registry: Registry, name: str) -> dict[str, Any] | None:
    versions = registry.groups().get(name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(registry: Registry, group_name: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for rt in sorted(registry.in_version(group_name, version), key=lambda r: r.plural):
        resources.extend(rt.discovery_entries())
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group_name}/{version}" if group_name else version, "resources": resources}
