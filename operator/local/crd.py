"""CustomResourceDefinitions: validation of the definition and the resource types it registers."""

from __future__ import annotations

from typing import Any

from . import cel, schema
from .errors import Cause, field_error
from .registry import ResourceType, ScaleSpec

Obj = dict[str, Any]


def crd_errors(crd: Obj) -> list[dict[str, Any]]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    errors = []
    for key in ("group", "scope"):
        if not spec.get(key):
            errors.append(field_error(Cause.REQUIRED, f"spec.{key}", ""))
    for key in ("plural", "kind"):
        if not names.get(key):
            errors.append(field_error(Cause.REQUIRED, f"spec.names.{key}", ""))
    if spec.get("scope") and spec["scope"] not in ("Namespaced", "Cluster"):
        errors.append(field_error(Cause.NOT_SUPPORTED, "spec.scope", 'supported values: "Cluster", "Namespaced"',
                                  spec["scope"]))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if crd["metadata"].get("name") != expected:
        errors.append(field_error(Cause.INVALID, "metadata.name", 'must be spec.names.plural+"."+spec.group',
                                  crd["metadata"].get("name")))
    versions = spec.get("versions") or []
    if not versions:
        errors.append(field_error(Cause.REQUIRED, "spec.versions", "must have exactly one version marked as storage "
                                  "version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        errors.append(field_error(Cause.INVALID, "spec.versions", "must have exactly one version marked as storage "
                                  "version", "array"))
    for i, version in enumerate(versions):
        root = ((version.get("schema") or {}).get("openAPIV3Schema"))
        if root is None:
            errors.append(field_error(Cause.REQUIRED, f"spec.versions[{i}].schema.openAPIV3Schema",
                                      "schemas are required"))
            continue
        for problem in schema.structural_errors(root) + cel.compile_errors(root):
            errors.append({"reason": Cause.INVALID, "field": f"spec.versions[{i}].schema.openAPIV3Schema",
                           "message": problem})
        scale = (version.get("subresources") or {}).get("scale")
        if scale is not None:
            for key in ("specReplicasPath", "statusReplicasPath"):
                if not str(scale.get(key, "")).startswith("."):
                    errors.append(field_error(Cause.INVALID, f"spec.versions[{i}].subresources.scale.{key}",
                                              "should be a json path under .spec or .status", scale.get(key)))
    return errors


def resource_types(crd: Obj) -> list[ResourceType]:
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        out.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
            namespaced=spec["scope"] == "Namespaced", singular=names.get("singular", ""),
            short_names=list(names.get("shortNames") or []), categories=list(names.get("categories") or []),
            status_subresource="status" in subresources,
            scale=ScaleSpec(scale["specReplicasPath"], scale["statusReplicasPath"], scale.get("labelSelectorPath"))
            if scale else None,
            schema=version["schema"]["openAPIV3Schema"],
            printer_columns=list(version.get("additionalPrinterColumns") or []),
            selectable_fields=[f["jsonPath"].lstrip(".") for f in version.get("selectableFields") or []],
        ))
    return out


def accepted_status(crd: Obj, when: str) -> Obj:
    spec = crd["spec"]
    condition = {"lastTransitionTime": when, "status": "True"}
    return {
        "acceptedNames": dict(spec["names"], singular=spec["names"].get("singular") or spec["names"]["kind"].lower(),
                              listKind=spec["names"].get("listKind") or spec["names"]["kind"] + "List"),
        "conditions": [
            {**condition, "type": "NamesAccepted", "reason": "NoConflicts", "message": "no conflicts found"},
            {**condition, "type": "Established", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
        "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
    }
