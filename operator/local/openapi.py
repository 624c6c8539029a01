"""A minimal /openapi/v3: per group-version documents listing each resource's operations.

kubectl reads them to learn that the server performs field validation (the ``fieldValidation`` query
parameter on PATCH operations), after which ``kubectl apply`` needs no ``--validate=false``. The
documents carry no schemas: ``kubectl explain`` and client-side validation have nothing to use.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .registry import Registry, ResourceType

Obj = dict[str, Any]
_FIELD_VALIDATION = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True},
                     "description": "Strict, Warn or Ignore: what to do with unknown or duplicate fields"}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _operations(rt: ResourceType) -> Obj:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    op = {"parameters": [_FIELD_VALIDATION], "x-kubernetes-group-version-kind": gvk,
          "responses": {"200": {"description": "OK"}}}
    base = f"/{_gv_path(rt.group, rt.version)}"
    collection = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    return {
        collection: {"post": {**op, "x-kubernetes-action": "post"}, "get": {**op, "x-kubernetes-action": "list"}},
        f"{collection}/{{name}}": {"patch": {**op, "x-kubernetes-action": "patch"},
                                   "put": {**op, "x-kubernetes-action": "put"},
                                   "get": {**op, "x-kubernetes-action": "get"}},
    }


def group_version(registry: Registry, group: str, version: str) -> Obj:
    paths: Obj = {}
    for rt in registry.in_version(group, version):
        paths.update(_operations(rt))
    return {"openapi": "3.0.0", "info": {"title": "interp-local", "version": "v1.33.0"}, "paths": paths,
            "components": {"schemas": {}}}


def root(registry: Registry) -> Obj:
    versions = {("", "v1")} | {(g, v) for g, vs in registry.groups().items() for v in vs}
    paths = {}
    for group, version in sorted(versions):
        doc = json.dumps(group_version(registry, group, version), sort_keys=True).encode()
        digest = hashlib.sha256(doc).hexdigest()[:16].upper()
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
