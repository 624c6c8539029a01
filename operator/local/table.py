"""meta.k8s.io Table responses, which ``kubectl get`` asks for: printer columns per kind and per CRD."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .meta import parse_time
from .registry import ResourceType

Obj = dict[str, Any]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(obj: Obj) -> str:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return "<unknown>"
    seconds = max(0, int(time.time() - parse_time(created)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "d" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath that printer columns use: .a.b, [n], [?(@.k=="v")]."""
    tokens = re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]",
                        path.strip().strip("{}"))
    node = obj
    for name, index, filter_key, filter_value in tokens:
        if name:
            node = node.get(name) if isinstance(node, dict) else None
        elif index:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            matches = [i for i in node if isinstance(i, dict) and str(jsonpath(i, "." + filter_key)) == filter_value] \
                if isinstance(node, list) else []
            node = matches[0] if matches else None
        if node is None:
            return None
    return node


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "date" and isinstance(value, str):
        try:
            return _age({"metadata": {"creationTimestamp": value}})
        except ValueError:
            return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _pod_row(pod: Obj) -> list[Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    total = len((pod.get("spec") or {}).get("containers") or [])
    reason = (pod.get("status") or {}).get("phase", "Pending")
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting")
        terminated = (s.get("state") or {}).get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason") and reason == "Running":
            reason = terminated["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    return [pod["metadata"]["name"], f"{ready}/{total}", reason, restarts, _age(pod),
            (pod.get("status") or {}).get("podIP") or "<none>", (pod.get("spec") or {}).get("nodeName") or "<none>"]


def _node_row(node: Obj) -> list[Any]:
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if (node.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    version = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [node["metadata"]["name"], status, "<none>", _age(node), version]


_BUILTIN: dict[str, tuple[list[tuple[str, str, int]], Any]] = {
    "pods": ([("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "integer", 0),
              ("Age", "string", 0), ("IP", "string", 1), ("Node", "string", 1)], _pod_row),
    "nodes": ([("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0), ("Age", "string", 0),
               ("Version", "string", 0)], _node_row),
    "namespaces": ([("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
                   lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o)]),
}


def _columns(rt: ResourceType) -> tuple[list[dict[str, Any]], Any]:
    if rt.group == "" and rt.plural in _BUILTIN:
        spec, row = _BUILTIN[rt.plural]
        return [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": p}
                for n, t, p in spec], row
    if rt.printer_columns:
        cols = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        cols += [{"name": c["name"], "type": "string" if c.get("type") == "date" else c.get("type", "string"),
                  "format": c.get("format", ""), "description": c.get("description", ""),
                  "priority": c.get("priority", 0)} for c in rt.printer_columns]

        def row(obj: Obj) -> list[Any]:
            return [obj["metadata"]["name"]] + [_cell(jsonpath(obj, c["jsonPath"]), c.get("type", "string"))
                                                for c in rt.printer_columns]
        return cols, row
    cols = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}]
    return cols, lambda o: [o["metadata"]["name"], _age(o)]


def table(rt: ResourceType, objects: list[Obj], resource_version: str, include: str | None,
          continue_token: str | None = None) -> Obj:
    columns, row = _columns(rt)
    rows = []
    for obj in objects:
        entry: Obj = {"cells": row(obj)}
        if include == "Object":
            entry["object"] = obj
        elif include != "None":
            entry["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": obj["metadata"]}
        rows.append(entry)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": columns, "rows": rows}
