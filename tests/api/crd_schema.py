"""Apply a generated CRD's openAPIV3Schema in Python, as the API server does: defaults, schema validation, CEL.

Independent of the pydantic models on purpose: the tests compare what the models accept and produce with what the
generated CRD YAML accepts and produces.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import jsonschema

from interp_operator.api.base import evaluate_cel


@dataclass
class SchemaViolation:
    field: str
    message: str


def field_path(parts: list[Any] | tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Fill absent properties that have a default, recursing into objects, lists and maps (also filled defaults)."""
    if isinstance(obj, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = apply_defaults(obj[name], sub)
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in obj:
            obj[key] = apply_defaults(obj[key], schema["additionalProperties"])
    elif isinstance(obj, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in obj]
    return obj


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Structural OpenAPI v3.0 → JSON Schema draft 4 (same keywords but int-or-string)."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema:
        out["properties"] = {k: to_json_schema(v) for k, v in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = to_json_schema(schema[key])
    return out


def _walk(obj: Any, schema: dict[str, Any], path: list[Any], out: list[SchemaViolation]) -> None:
    if schema.get("x-kubernetes-list-type") == "map" and isinstance(obj, list):
        keys = schema["x-kubernetes-list-map-keys"]
        seen = set()
        for i, item in enumerate(obj):
            key = tuple(item.get(k) for k in keys)
            if key in seen:
                out.append(SchemaViolation(field_path([*path, i]), f"Duplicate value: {key}"))
            seen.add(key)
    for rule in schema.get("x-kubernetes-validations", ()):
        if not evaluate_cel(rule["rule"], obj):
            out.append(SchemaViolation(field_path(path), rule["message"]))
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in obj:
                _walk(obj[name], sub, [*path, name], out)
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            _walk(item, schema["items"], [*path, i], out)


def validate(obj: dict[str, Any], crd: dict[str, Any]) -> tuple[dict[str, Any], list[SchemaViolation]]:
    """Default ``obj`` with the CRD's schema and return it with every violation (schema first, then CEL)."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaulted = apply_defaults(copy.deepcopy(obj), schema)
    validator = jsonschema.Draft4Validator(to_json_schema(schema))
    errors = [SchemaViolation(field_path(list(e.absolute_path)), e.message) for e in validator.iter_errors(defaulted)]
    if not errors:  # the API server runs CEL only on objects that passed the schema
        _walk(defaulted, schema, [], errors)
    return defaulted, errors
