"""/openapi/v3: the index and one document per group-version, as kubectl reads them.

Each document lists every resource's operations (kubectl learns from the ``fieldValidation`` parameter that the
server validates fields, so ``kubectl apply`` needs no ``--validate=false``) and, for custom resources, the
schemas apiextensions-apiserver's OpenAPI builder publishes: the kind (the CRD's openAPIV3Schema with
``apiVersion``, ``kind`` and a reference to ObjectMeta added, tagged with ``x-kubernetes-group-version-kind``),
its list kind, and the meta/v1 schemas they refer to. ``kubectl explain`` finds a kind's schema by that tag.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .openapi_meta import META_SCHEMAS
from .registry import Registry, ResourceType

Obj = dict[str, Any]
_FIELD_VALIDATION = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
                     "description": "Strict, Warn or Ignore: what to do with unknown or duplicate fields"}
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_DOCS = "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
_API_VERSION = {"type": "string", "description": (
    "APIVersion defines the versioned schema of this representation of an object. Servers should convert "
    "recognized schemas to the latest internal value, and may reject unrecognized values. More info: "
    f"{_DOCS}#resources")}
_KIND = {"type": "string", "description": (
    "Kind is a string value representing the REST resource this object represents. Servers may infer this from "
    "the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
    f"{_DOCS}#types-kinds")}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def model_name(group: str, version: str, kind: str) -> str:
    """The component name of a kind: the group reversed (interp.dev -> dev.interp), then version and kind."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _ref(name: str) -> Obj:
    return {"$ref": f"#/components/schemas/{name}"}


def _operations(rt: ResourceType) -> Obj:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    op = {"parameters": [_FIELD_VALIDATION], "x-kubernetes-group-version-kind": gvk,
          "responses": {"200": {"description": "OK"}}}
    if rt.is_custom:
        op["responses"] = {"200": {"description": "OK", "content": {"application/json": {
            "schema": _ref(model_name(rt.group, rt.version, rt.kind))}}}}
    base = f"/{_gv_path(rt.group, rt.version)}"
    collection = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    return {
        collection: {"post": {**op, "x-kubernetes-action": "post"}, "get": {**op, "x-kubernetes-action": "list"}},
        f"{collection}/{{name}}": {"patch": {**op, "x-kubernetes-action": "patch"},
                                   "put": {**op, "x-kubernetes-action": "put"},
                                   "get": {**op, "x-kubernetes-action": "get"}},
    }


_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def _unfold(schema: Obj) -> None:
    """Structural.Unfold: an x-kubernetes-int-or-string node spells its two types out as anyOf (inside allOf when
    it has an anyOf of its own), as the published schema does."""
    for sub in (schema.get("properties") or {}).values():
        _unfold(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _unfold(schema[key])
    if not schema.get("x-kubernetes-int-or-string"):
        return
    if schema.get("anyOf") == _INT_OR_STRING or (schema.get("allOf") or [{}])[0] == {"anyOf": _INT_OR_STRING}:
        return
    if "anyOf" not in schema:
        schema["anyOf"] = copy.deepcopy(_INT_OR_STRING)
    else:
        schema["allOf"] = [{"anyOf": copy.deepcopy(_INT_OR_STRING)}, *(schema.get("allOf") or [])]


def _kind_schema(rt: ResourceType) -> Obj:
    assert rt.schema is not None
    schema = copy.deepcopy(rt.schema)
    _unfold(schema)
    properties = schema.setdefault("properties", {})
    properties["metadata"] = {"allOf": [_ref(_META + "ObjectMeta")],
                              "description": f"Standard object's metadata. More info: {_DOCS}#metadata"}
    properties["apiVersion"] = dict(_API_VERSION)
    properties["kind"] = dict(_KIND)
    schema["x-kubernetes-group-version-kind"] = [{"group": rt.group, "kind": rt.kind, "version": rt.version}]
    if rt.selectable_fields:
        schema["x-kubernetes-selectable-fields"] = [{"fieldPath": path} for path in rt.selectable_fields]
    return schema


def _list_schema(rt: ResourceType) -> Obj:
    list_kind = f"{rt.kind}List"
    return {
        "type": "object", "description": f"{list_kind} is a list of {rt.kind}", "required": ["items"],
        "properties": {
            "apiVersion": dict(_API_VERSION), "kind": dict(_KIND),
            "items": {"type": "array", "items": _ref(model_name(rt.group, rt.version, rt.kind)),
                      "description": f"List of {rt.plural}. More info: {_DOCS}"},
            "metadata": {"allOf": [_ref(_META + "ListMeta")],
                         "description": f"Standard list metadata. More info: {_DOCS}#types-kinds"},
        },
        "x-kubernetes-group-version-kind": [{"group": rt.group, "kind": list_kind, "version": rt.version}],
    }


def group_version(registry: Registry, group: str, version: str) -> Obj:
    paths: Obj = {}
    schemas: Obj = {}
    for rt in registry.in_version(group, version):
        paths.update(_operations(rt))
        if rt.is_custom:
            schemas[model_name(group, version, rt.kind)] = _kind_schema(rt)
            schemas[model_name(group, version, f"{rt.kind}List")] = _list_schema(rt)
    if schemas:
        schemas.update(copy.deepcopy(META_SCHEMAS))
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"}, "paths": paths,
            "components": {"schemas": dict(sorted(schemas.items()))}}


def root(registry: Registry) -> Obj:
    versions = {("", "v1")} | {(g, v) for g, vs in registry.groups().items() for v in vs}
    paths = {}
    for group, version in sorted(versions):
        doc = json.dumps(group_version(registry, group, version), sort_keys=True).encode()
        digest = hashlib.sha512(doc).hexdigest()[:128].upper()
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
