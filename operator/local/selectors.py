"""Label and field selectors with the syntax and error messages of the real API server."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_KEY = r"[A-Za-z0-9./_-]+"
_VALUE = r"[A-Za-z0-9._-]*"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and labels[self.key] == self.values[0]
        if self.op == "!=":
            return not present or labels[self.key] != self.values[0]
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # notin


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    reqs = []
    for part in _split_top_level(text):
        m = re.fullmatch(rf"({_KEY})\s+(in|notin)\s+\(([^)]*)\)", part)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
            continue
        m = re.fullmatch(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})", part)
        if m:
            reqs.append(Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
            continue
        m = re.fullmatch(rf"!\s*({_KEY})", part)
        if m:
            reqs.append(Requirement(m.group(1), "!"))
            continue
        if re.fullmatch(_KEY, part):
            reqs.append(Requirement(part, "exists"))
            continue
        raise bad_request(f"unable to parse requirement: invalid label selector: {part!r}")
    return reqs



def labels_match(reqs: Iterable[Requirement], obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)



@dataclass(frozen=True)
class FieldRequirement:
    path: str
    equal: bool
    value: str


def parse_field_selector(text: str | None, supported: Iterable[str], kind: str) -> list[FieldRequirement]:
    if not text:
        return []
    allowed = {"metadata.name", "metadata.namespace", *supported}
    reqs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._\[\]-]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise bad_request(f"invalid field selector: {part!r}")
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: {path} (for {kind})')
        reqs.append(FieldRequirement(path, op != "!=", value))
    return reqs


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if path == "source" and isinstance(node, dict):
        return str(node.get("component", ""))
    return str(node)


def fields_match(reqs: Iterable[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all((field_value(obj, r.path) == r.value) == r.equal for r in reqs)


def make_filter(namespace: str | None, label_text: str | None, field_text: str | None,
                supported: Iterable[str], kind: str) -> Callable[[dict[str, Any]], bool]:
    labels = parse_label_selector(label_text)
    fields = parse_field_selector(field_text, supported, kind)

    def accept(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if namespace and meta.get("namespace") != namespace:
            return False
        return labels_match(labels, obj) and fields_match(fields, obj)

    return accept
