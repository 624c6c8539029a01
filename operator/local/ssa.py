"""Server-side apply and managedFields.

Field ownership is kept per manager as a set of paths (``f:`` fields, ``k:`` list-map items, ``v:`` set
items), serialised to the real ``FieldsV1`` form. Applying merges the applied configuration into the live
object, removes fields the manager applied before and no longer applies (unless another manager owns
them), and reports a 409 Conflict when it would change a value another manager owns, unless forced.
Updates (PUT, non-apply patches) give their manager the leaf fields they changed.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError
from .patch import MERGE_KEYS, MERGED_PRIMITIVE_LISTS

Path = tuple[str, ...]
_METADATA_TRACKED = {"labels", "annotations", "finalizers", "ownerReferences"}


class Shape:
    """How lists are merged at a point of the object: from a CRD schema, or the built-in table."""

    def __init__(self, schema: dict[str, Any] | None):
        self.schema = schema

    def child(self, key: str) -> Shape:
        if self.schema is None:
            return self
        props = self.schema.get("properties") or {}
        if key in props:
            return Shape(props[key])
        additional = self.schema.get("additionalProperties")
        if isinstance(additional, dict):
            return Shape(additional)
        if key == "metadata":
            return Shape(None)
        return Shape({"x-kubernetes-preserve-unknown-fields": True})

    def items(self) -> Shape:
        if self.schema is None:
            return self
        items = self.schema.get("items")
        return Shape(items if isinstance(items, dict) else {})

    def list_kind(self, field: str) -> tuple[str, list[str]]:
        if self.schema is None:
            if field in MERGE_KEYS:
                return "map", [MERGE_KEYS[field]]
            return ("set", []) if field in MERGED_PRIMITIVE_LISTS else ("atomic", [])
        kind = self.schema.get("x-kubernetes-list-type", "atomic")
        return kind, list(self.schema.get("x-kubernetes-list-map-keys") or [])


def _item_key(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))


def fieldset(obj: Any, shape: Shape, prefix: Path = (), top: bool = True) -> set[Path]:
    """Leaf paths set by ``obj`` (list-map items also contribute their own ``.`` path)."""
    paths: set[Path] = set()
    if not isinstance(obj, dict):
        return {prefix} if prefix else set()
    for key, value in obj.items():
        if top and key in ("apiVersion", "kind"):
            continue
        if top and key == "metadata":
            for mkey, mvalue in (value or {}).items():
                if mkey in _METADATA_TRACKED:
                    paths |= _value_paths(mvalue, Shape(None), ("f:metadata", f"f:{mkey}"), mkey)
            continue
        paths |= _value_paths(value, shape.child(key), (*prefix, f"f:{key}"), key)
    return paths


def _value_paths(value: Any, shape: Shape, path: Path, field: str) -> set[Path]:
    if isinstance(value, dict):
        inner = fieldset(value, shape, path, top=False)
        return inner or {path}
    if isinstance(value, list):
        kind, keys = shape.list_kind(field)
        if kind == "map" and keys and all(isinstance(v, dict) for v in value):
            out: set[Path] = set()
            for item in value:
                item_path = (*path, _item_key(item, keys))
                out.add((*item_path, "."))
                out |= fieldset(item, shape.items(), item_path, top=False)
            return out or {path}
        if kind == "set":
            return {(*path, "v:" + json.dumps(v, sort_keys=True)) for v in value} or {path}
    return {path}


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    return root


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, sub in tree.items():
        if key == ".":
            paths.add((*prefix, "."))
        elif sub:
            paths |= from_fields_v1(sub, (*prefix, key))
        else:
            paths.add((*prefix, key))
    return paths


def _lookup(obj: Any, path: Path) -> Any:
    node = obj
    for part in path:
        if part == ".":
            return node
        if part.startswith("f:") and isinstance(node, dict):
            node = node.get(part[2:], _ABSENT)
        elif part.startswith("k:") and isinstance(node, list):
            want = json.loads(part[2:])
            node = next((i for i in node if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())),
                        _ABSENT)
        elif part.startswith("v:") and isinstance(node, list):
            value = json.loads(part[2:])
            node = value if value in node else _ABSENT
        else:
            return _ABSENT
        if node is _ABSENT:
            return _ABSENT
    return node


_ABSENT = object()


def _remove_path(obj: Any, path: Path) -> None:
    if path[-1] == ".":
        path = path[:-1]
    parent = _lookup(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if isinstance(parent, dict) and last.startswith("f:"):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        target = _lookup(obj, path)
        if target is not _ABSENT:
            parent[:] = [i for i in parent if i is not target and i != target]


def _remove_dropped(live: Any, dropped: set[Path], others: set[Path]) -> None:
    """Remove what a manager stopped applying, except what other managers own; whole list items first."""
    removed_items: list[Path] = []
    for path in sorted(dropped, key=lambda p: (len(p) - (p[-1] == "."), p[-1] != ".")):
        if any(path[:len(item)] == item for item in removed_items):
            continue
        if path[-1] == ".":
            item = path[:-1]
            if any(o[:len(item)] == item for o in others):
                continue
            removed_items.append(item)
        elif path in others:
            continue
        _remove_path(live, path)


def _merge_applied(live: Any, applied: Any, shape: Shape, field: str = "") -> Any:
    if isinstance(applied, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in applied.items():
            sub = Shape(None) if key == "metadata" and not field else shape.child(key)
            out[key] = _merge_applied(live.get(key), value, sub, key)
        return out
    if isinstance(applied, list) and isinstance(live, list):
        kind, keys = shape.list_kind(field)
        if kind == "map" and keys and all(isinstance(v, dict) for v in applied + live):
            out_list = [copy.deepcopy(i) for i in live]
            for item in applied:
                match = next((n for n, i in enumerate(out_list) if all(i.get(k) == item.get(k) for k in keys)),
                             None)
                if match is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[match] = _merge_applied(out_list[match], item, shape.items())
            return out_list
        if kind == "set":
            return live + [v for v in applied if v not in live]
    return copy.deepcopy(applied)


def _managers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool,
          schema: dict[str, Any] | None, api_version: str, subresource: str = "") -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` over ``live`` (None when creating)."""
    shape = Shape(schema)
    live = copy.deepcopy(live) if live is not None else {"metadata": {}}
    applied_paths = fieldset(applied, shape)
    entries = _managers(live)
    owned = {(e["manager"], e.get("operation"), e.get("subresource", "")): from_fields_v1(e.get("fieldsV1") or {})
             for e in entries}
    mine_key = (manager, "Apply", subresource)
    previous = owned.get(mine_key, set())
    conflicts = []
    for path in sorted(applied_paths):
        if path[-1] == ".":
            continue
        new_value = _lookup(applied, path)
        old_value = _lookup(live, path)
        if old_value is _ABSENT or old_value == new_value:
            continue
        for owner_key, paths in owned.items():
            if owner_key != mine_key and path in paths:
                if force:
                    paths.discard(path)
                else:
                    conflicts.append((owner_key[0], path))
    if conflicts:
        causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{who}": {_dotted(path)}',
                   "field": _dotted(path)} for who, path in conflicts]
        listed = "\n- ".join(c["message"] for c in causes)
        raise ApiError(409, "Conflict", f"Apply failed with {len(causes)} conflict{'s' if len(causes) > 1 else ''}: "
                       f"{listed if len(causes) == 1 else chr(10) + '- ' + listed}", {"causes": causes})
    others = set().union(*(p for k, p in owned.items() if k != mine_key)) if owned else set()
    _remove_dropped(live, previous - applied_paths, others)
    body = {k: v for k, v in applied.items() if k not in ("apiVersion", "kind")}
    merged = _merge_applied(live, body, shape)
    for key in ("apiVersion", "kind"):
        if key in applied:
            merged[key] = applied[key]
    owned[mine_key] = applied_paths
    merged.setdefault("metadata", {})["managedFields"] = _serialise(owned, entries, mine_key, api_version)
    return merged


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, schema: dict[str, Any] | None,
                  api_version: str, subresource: str = "") -> None:
    """Give ``manager`` (operation Update) the fields that changed from ``old`` to ``new``, in place."""
    shape = Shape(schema)
    new_paths = fieldset(new, shape)
    if old is None:
        changed = new_paths
        entries: list[dict[str, Any]] = []
    else:
        old_paths = fieldset(old, shape)
        changed = {p for p in new_paths if p not in old_paths or _lookup(old, p) != _lookup(new, p)}
        entries = _managers(old)
    owned = {(e["manager"], e.get("operation"), e.get("subresource", "")): from_fields_v1(e.get("fieldsV1") or {})
             for e in entries}
    for key, paths in owned.items():
        paths &= new_paths
        if key != (manager, "Update", subresource):
            paths -= changed
    mine_key = (manager, "Update", subresource)
    if changed or mine_key in owned:
        owned[mine_key] = owned.get(mine_key, set()) | changed
    new.setdefault("metadata", {})["managedFields"] = _serialise(owned, entries, mine_key, api_version)


def _serialise(owned: dict[tuple[str, str | None, str], set[Path]], entries: list[dict[str, Any]],
               touched: tuple[str, str | None, str], api_version: str) -> list[dict[str, Any]]:
    times = {(e["manager"], e.get("operation"), e.get("subresource", "")): e.get("time") for e in entries}
    out = []
    for key, paths in owned.items():
        if not paths:
            continue
        manager, operation, subresource = key
        entry: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": api_version,
                                 "time": _now() if key == touched else times.get(key) or _now(),
                                 "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
        if subresource:
            entry["subresource"] = subresource
        out.append(entry)
    return out


def _dotted(path: Path) -> str:
    parts = []
    for part in path:
        if part.startswith("f:"):
            parts.append("." + part[2:])
        elif part.startswith(("k:", "v:")):
            parts.append(f"[{part[2:]}]")
    return "".join(parts)
