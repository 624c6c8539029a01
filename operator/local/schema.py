"""openAPIV3Schema handling for custom resources: pruning, defaulting and validation.

Messages follow the real API server (``spec.x: Invalid value: ...: spec.x in body should be ...``) so that
clients and tests see the same text on both. CEL rules are evaluated by :mod:`.cel` after these checks pass.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .errors import Cause, field_error
from .gofmt import go_json, go_number, go_quote

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(value: Any, schema: dict[str, Any], *, root: bool = False) -> Any:
    """Drop fields the schema does not declare (unless it preserves unknown fields)."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields", False) or additional is True
        keep_meta = root or schema.get("x-kubernetes-embedded-resource", False)
        out = {}
        for key, item in value.items():
            if keep_meta and key in _ROOT_KEEP:
                out[key] = item  # the server owns metadata; a schema cannot prune it
            elif key in props:
                out[key] = prune(item, props[key])
            elif isinstance(additional, dict):
                out[key] = prune(item, additional)
            elif keep_unknown:
                out[key] = item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "", *, root: bool = False) -> list[str]:
    """The paths that :func:`prune` would drop (for fieldValidation Strict and Warn)."""
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields", False) or additional is True
        keep_meta = root or schema.get("x-kubernetes-embedded-resource", False)
        for key, item in value.items():
            child = _join(path, key)
            if keep_meta and key in _ROOT_KEEP:
                continue
            if key in props:
                found += unknown_fields(item, props[key], child)
            elif isinstance(additional, dict):
                found += unknown_fields(item, additional, child)
            elif not keep_unknown:
                found.append(child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill missing (or null, when not nullable) properties that declare a default, recursively; drop a null of a
    non-nullable field without a default (PruneNonNullableNullsWithoutDefaults), which is then simply absent."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional_schema = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key) if key in props else additional_schema if isinstance(additional_schema, dict) \
                else None
            if item is None and sub is not None and not sub.get("nullable") and "default" not in sub:
                continue
            out[key] = item
        for key, sub in props.items():
            if "default" in sub and (key not in out or (out[key] is None and not sub.get("nullable"))):
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        if isinstance(additional_schema, dict):
            for key in out:
                if key not in props:
                    out[key] = apply_defaults(out[key], additional_schema)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


_TYPE_NAMES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPE_NAMES[expected])


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[dict[str, Any]]:
    """Validate ``value`` against a structural schema; return field causes (empty when valid)."""
    errors: list[dict[str, Any]] = []
    _validate(value, schema, path, errors)
    return errors


def _validate(value: Any, schema: dict[str, Any], path: str, errors: list[dict[str, Any]]) -> None:
    shown = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            errors.append(field_error(Cause.TYPE, path, f'{shown} in body must be of type {schema["type"]}: "null"',
                                      "null", show_value=True))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(field_error(Cause.TYPE, path, f"{shown} in body must be of type integer,string: "
                                      f'"{_json_type(value)}"', _json_type(value)))
            return
    elif (expected := schema.get("type")) and not _type_ok(value, expected):
        got = _json_type(value)
        errors.append(field_error(Cause.TYPE, path, f'{shown} in body must be of type {expected}: "{got}"', got))
        return
    _validate_composites(value, schema, path, errors)
    if isinstance(value, str):
        _validate_string(value, schema, path, shown, errors)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _validate_number(value, schema, path, shown, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, shown, errors)
    if "enum" in schema and value not in schema["enum"]:
        # field.NotSupported quotes every allowed value, non-strings as their JSON text
        allowed = ", ".join(go_quote(v if isinstance(v, str) else go_json(v)) for v in schema["enum"])
        errors.append(field_error(Cause.NOT_SUPPORTED, path, f"supported values: {allowed}", value))
    if isinstance(value, dict):
        _validate_object(value, schema, path, shown, errors)


def _composite(path: str, text: str) -> dict[str, Any]:
    # kube-openapi reports these as plain errors, which the server files under the root (a nil path) with value ""
    return field_error(Cause.INVALID, "<nil>", f"{go_quote(path)} {text}", "")


def _validate_composites(value: Any, schema: dict[str, Any], path: str, errors: list[dict[str, Any]]) -> None:
    """anyOf, oneOf, allOf and not as kube-openapi reports them: the composite's own error, then the failures of
    one branch (kube-openapi keeps the branch with the most passing checks; this keeps the first)."""
    if schema.get("anyOf"):
        failures = []
        for sub in schema["anyOf"]:
            found = validate(value, sub, path)
            if not found:
                break
            failures.append(found)
        else:
            errors.append(_composite(path, "must validate at least one schema (anyOf)"))
            errors += failures[0]
    if schema.get("oneOf"):
        results = [validate(value, sub, path) for sub in schema["oneOf"]]
        valid = sum(1 for found in results if not found)
        if valid != 1:
            found_text = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            errors.append(_composite(path, f"must validate one and only one schema (oneOf). {found_text}"))
            if valid == 0:
                errors += results[0]
    if schema.get("allOf"):
        results = [validate(value, sub, path) for sub in schema["allOf"]]
        for found in results:
            errors += found
        failed = sum(1 for found in results if found)
        if failed:
            none = ". None validated" if failed == len(results) else ""
            errors.append(_composite(path, f"must validate all the schemas (allOf){none}"))
    if isinstance(schema.get("not"), dict) and not validate(value, schema["not"], path):
        errors.append(_composite(path, "must not validate the schema (not)"))


def _validate_string(value: str, schema: dict[str, Any], path: str, shown: str, errors: list) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        limit = schema["maxLength"]
        unit = "byte" if limit == 1 else "bytes"
        errors.append(field_error(Cause.TOO_LONG, path, f"may not be more than {limit} {unit}"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(field_error(Cause.INVALID, path, f"{shown} in body should be at least "
                                  f"{schema['minLength']} chars long", value))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(field_error(Cause.INVALID, path, f'{shown} in body should match \'{schema["pattern"]}\'',
                                  value))


def _bound(limit: float, value: float) -> str:
    """kube-openapi checks an integer against the bound as int64 (so prints it truncated), a number as float64."""
    return str(int(limit)) if isinstance(value, int) else go_number(limit)


def _validate_number(value: float, schema: dict[str, Any], path: str, shown: str, errors: list) -> None:
    if "multipleOf" in schema and value % schema["multipleOf"] != 0:
        factor = _bound(schema["multipleOf"], value)
        errors.append(field_error(Cause.INVALID, path, f"{shown} in body should be a multiple of {factor}", value))
    if "minimum" in schema:
        low, bound = schema["minimum"], _bound(schema["minimum"], value)
        if schema.get("exclusiveMinimum") and value <= low:
            errors.append(field_error(Cause.INVALID, path, f"{shown} in body should be greater than {bound}", value))
        elif value < low:
            errors.append(field_error(Cause.INVALID, path,
                                      f"{shown} in body should be greater than or equal to {bound}", value))
    if "maximum" in schema:
        high, bound = schema["maximum"], _bound(schema["maximum"], value)
        if schema.get("exclusiveMaximum") and value >= high:
            errors.append(field_error(Cause.INVALID, path, f"{shown} in body should be less than {bound}", value))
        elif value > high:
            errors.append(field_error(Cause.INVALID, path,
                                      f"{shown} in body should be less than or equal to {bound}", value))


def _validate_array(value: list, schema: dict[str, Any], path: str, shown: str, errors: list) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(field_error(Cause.TOO_MANY, path, _at_most(schema["maxItems"]), len(value)))
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(field_error(Cause.INVALID, path, f"{shown} in body should have at least "
                                  f"{schema['minItems']} items", len(value)))
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", errors)


def _at_most(limit: int) -> str:
    return f"must have at most {limit} {'item' if limit == 1 else 'items'}"


def list_type_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[dict[str, Any]]:
    """x-kubernetes-list-type set and map uniqueness, checked after the schema as the real server checks it: each
    repeated item is a Duplicate cause naming the item (a set) or its present keys (a map)."""
    errors: list[dict[str, Any]] = []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) if key in props else additional if isinstance(additional, dict) else None
            if sub is not None:
                errors += list_type_errors(item, sub, _join(path, key))
    elif isinstance(value, list):
        raw_items = schema.get("items")
        items: dict[str, Any] = raw_items if isinstance(raw_items, dict) else {}
        for i, item in enumerate(value):
            errors += list_type_errors(item, items, f"{path}[{i}]")
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            keys: list[Any] = value
        elif list_type == "map":
            keys = [{k: item[k] for k in schema.get("x-kubernetes-list-map-keys") or [] if k in item}
                    if isinstance(item, dict) else {} for item in value]
        else:
            return errors
        seen: set[str] = set()
        for i, key in enumerate(keys):
            text = go_json(key)
            if text in seen:
                errors.append(field_error(Cause.DUPLICATE, f"{path}[{i}]", "", key))
            seen.add(text)
    return errors


def _validate_object(value: dict, schema: dict[str, Any], path: str, shown: str, errors: list) -> None:
    for key in schema.get("required") or []:
        if key not in value:
            errors.append(field_error(Cause.REQUIRED, _join(path, key), ""))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(field_error(Cause.TOO_MANY, path, _at_most(schema["maxProperties"]), len(value)))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(field_error(Cause.INVALID, path, f"{shown} in body should have at least "
                                  f"{schema['minProperties']} properties", len(value)))
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            _validate(item, props[key], _join(path, key), errors)
        elif isinstance(additional, dict):
            _validate(item, additional, _join(path, key), errors)


STRUCTURAL_FORBIDDEN = ("$ref", "definitions", "dependencies", "additionalItems", "patternProperties")


def structural_errors(schema: dict[str, Any], path: str = "") -> list[str]:
    """The structural-schema violations that make a CRD invalid (a subset of the real checks)."""
    problems = []
    for key in STRUCTURAL_FORBIDDEN:
        if key in schema:
            problems.append(f"{path or 'openAPIV3Schema'}.{key}: Forbidden: {key} is not supported")
    if "properties" in schema and "additionalProperties" in schema and schema["additionalProperties"] is not False:
        problems.append(f"{path}: Forbidden: additionalProperties and properties are mutual exclusive")
    has_type = "type" in schema or schema.get("x-kubernetes-int-or-string") \
        or schema.get("x-kubernetes-preserve-unknown-fields")
    if path and not has_type:
        problems.append(f"{path}.type: Required value: must not be empty for specified object fields")
    for key, sub in (schema.get("properties") or {}).items():
        problems += structural_errors(sub, f"{path or 'openAPIV3Schema'}.properties[{key}]")
    if isinstance(schema.get("items"), dict):
        problems += structural_errors(schema["items"], f"{path or 'openAPIV3Schema'}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_errors(schema["additionalProperties"],
                                      f"{path or 'openAPIV3Schema'}.additionalProperties")
    return problems
