"""meta.k8s.io Table responses, which ``kubectl get`` asks for: printer columns per kind and per CRD."""

from __future__ import annotations

import re
import time
from typing import Any

from .gofmt import go_value
from .meta import parse_time
from .registry import ResourceType

Obj = dict[str, Any]


_NAME_DOC = ("Name must be unique within a namespace. Is required when creating resources, although some "
             "resources may allow a client to request the generation of an appropriate name automatically. Name is "
             "primarily intended for creation idempotence and configuration definition. Cannot be updated. More "
             "info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
_CREATED_DOC = ("CreationTimestamp is a timestamp representing the server time when this object was created. It is "
                "not guaranteed to be set in happens-before order across separate operations. Clients may not set "
                "this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. "
                "Null for lists. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")
# A CRD version without printer columns is served with this one (apiextensions-apiserver serveDefaultColumnsIfEmpty).
_DEFAULT_COLUMNS = [{"name": "Age", "type": "date", "description": _CREATED_DOC,
                     "jsonPath": ".metadata.creationTimestamp"}]
# Go's time.RFC3339 layout as time.Parse accepts it: fractional seconds optional, a zone required.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


class _PathError(Exception):
    """A JSONPath step the real server's evaluator rejects (an index out of range, indexing a non-list)."""


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: about two significant figures, ``<invalid>`` for the future."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m" if whole % 60 == 0 else f"{minutes}m{whole % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, hours // 24 % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _since(timestamp: str) -> str:
    """A date cell: ``<unknown>`` for an empty time, ``<invalid>`` for text that is not RFC3339 or in the future."""
    if timestamp in ("", "null"):
        return "<unknown>"
    if not _RFC3339.fullmatch(timestamp):
        return "<invalid>"
    try:
        return human_duration(time.time() - parse_time(timestamp))
    except ValueError:
        return "<invalid>"


def _age(obj: Obj) -> str:
    return _since(obj["metadata"].get("creationTimestamp") or "")


_STEP = re.compile(r"\.([A-Za-z0-9_/-]+)|\[(-?\d+)\]|\[(\*)\]|\.(\*)"
                   r"|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]")


def jsonpath_results(obj: Any, path: str) -> list[Any]:
    """The values a printer column's JSONPath finds, in order, as client-go's evaluator with missing keys allowed
    finds them: ``.a.b``, ``[n]`` (negative from the end), ``[*]``, ``.*`` and ``[?(@.k=="v")]``. Raises
    _PathError where that evaluator fails."""
    nodes = [obj]
    for name, index, star, dot_star, filter_key, filter_value in _STEP.findall(path.strip().strip("{}")):
        found: list[Any] = []
        for node in nodes:
            if node is None:  # a null is skipped, as template.Indirect reports it nil
                continue
            if name:
                if isinstance(node, dict) and name in node:
                    found.append(node[name])
            elif index:
                if not isinstance(node, list):
                    raise _PathError(f"{type(node).__name__} is not array or slice")
                i = int(index) + (len(node) if int(index) < 0 else 0)
                if not 0 <= i < len(node):
                    raise _PathError(f"array index out of bounds: index {index}, length {len(node)}")
                found.append(node[i])
            elif star or dot_star:
                found += list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
            elif isinstance(node, list):
                found += [item for item in node if isinstance(item, dict)
                          and _filter_value(item, filter_key) == filter_value]
        nodes = found
        if not nodes:
            return []
    return nodes


def _filter_value(item: dict, key: str) -> str | None:
    value: Any = item
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else value if isinstance(value, str) else go_value(value)


def column_cell(obj: Obj, json_path: str, kind: str) -> Any:
    """One printer-column cell as apiextensions-apiserver's tableconvertor fills it: the first JSONPath result;
    for a string column its JSONPath text (objects and arrays as JSON, scalars as Go prints them, an explicit null
    as ``<no value>``), for the other types the value when it has that type (integers truncated, a date as the
    time since it), null otherwise."""
    try:
        found = jsonpath_results(obj, json_path)
    except _PathError:
        return None
    if not found:
        return None
    value = found[0]
    if kind == "string":
        if value is None:
            return "<no value>"
        return value if isinstance(value, str) else go_value(value)
    if value is None or (isinstance(value, bool) and kind != "boolean"):
        return None
    if kind == "integer" and isinstance(value, (int, float)):
        return int(value)
    if kind == "number" and isinstance(value, (int, float)):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        return _since(value)
    return None


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
    if rt.is_custom:
        printer = rt.printer_columns or _DEFAULT_COLUMNS
        cols = [{"name": "Name", "type": "string", "format": "name", "description": _NAME_DOC, "priority": 0}]
        cols += [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                  "description": c.get("description") or
                  f"Custom resource definition column (in JSONPath format): {c['jsonPath']}",
                  "priority": c.get("priority", 0)} for c in printer]

        def row(obj: Obj) -> list[Any]:
            return [obj["metadata"]["name"]] + [column_cell(obj, c["jsonPath"], c.get("type", "string"))
                                                for c in printer]
        return cols, row
    if rt.group == "apiextensions.k8s.io":
        # the real server lists CRDs with apiserver's default table convertor: the creation time itself
        cols = [{"name": "Name", "type": "string", "format": "name", "description": _NAME_DOC, "priority": 0},
                {"name": "Created At", "type": "date", "format": "", "description": _CREATED_DOC, "priority": 0}]
        return cols, lambda o: [o["metadata"]["name"], _rfc3339(o["metadata"].get("creationTimestamp"))]
    cols = [{"name": "Name", "type": "string", "format": "name", "description": _NAME_DOC, "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": _CREATED_DOC, "priority": 0}]
    return cols, lambda o: [o["metadata"]["name"], _age(o)]


def _rfc3339(timestamp: str | None) -> str:
    """Go's Time.UTC().Format(time.RFC3339): whole seconds, Z; the zero time for a missing one."""
    if not timestamp:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(parse_time(timestamp))))


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
