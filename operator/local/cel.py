"""CEL ``x-kubernetes-validations`` evaluated with cel-python (``celpy``).

Rules run at every schema node that declares them, with ``self`` bound to the node's value and, for
transition rules, ``oldSelf`` bound to the correlated value of the previous object (object properties by
name, ``x-kubernetes-list-type: map`` items by their keys). Transition rules run only on updates where the
old value exists, unless the rule sets ``optionalOldSelf``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import celpy

from .errors import Cause, field_error

_ENV = celpy.Environment()
_MISSING = object()
_ROOT = "<nil>"  # how field.Path prints the nil path the real server validates the object's root with


@functools.lru_cache(maxsize=4096)
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def compile_errors(schema: dict[str, Any], path: str = "openAPIV3Schema") -> list[str]:
    """Rules that do not compile, reported when a CRD is created so that no object meets them first."""
    problems = []
    for i, rule in enumerate(schema.get("x-kubernetes-validations") or []):
        for key in ("rule", "messageExpression"):
            if key in rule:
                try:
                    _program(rule[key])
                except Exception as exc:  # celpy raises several parse error types
                    problems.append(f"{path}.x-kubernetes-validations[{i}].{key}: Invalid value: "
                                    f"{rule[key]!r}: compilation failed: {exc}")
    for key, sub in (schema.get("properties") or {}).items():
        problems += compile_errors(sub, f"{path}.properties[{key}]")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems += compile_errors(schema[key], f"{path}.{key}")
    return problems


def _is_transition(rule: dict[str, Any]) -> bool:
    return "oldSelf" in rule.get("rule", "")


def _schema_type(schema: dict[str, Any], value: Any) -> str:
    """The node's type as the structural schema names it (``sts.Type``), which evaluation errors print."""
    if schema.get("type"):
        return str(schema["type"])
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else ""


def evaluate(value: Any, schema: dict[str, Any], old: Any = _MISSING, path: str = "") -> list[dict[str, Any]]:
    """Evaluate all rules under ``schema`` for ``value``; return field causes (empty when all pass)."""
    errors: list[dict[str, Any]] = []
    _walk(value, schema, old, path, errors)
    return errors


def _walk(value: Any, schema: dict[str, Any], old: Any, path: str, errors: list[dict[str, Any]]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) if key in props else (additional if isinstance(additional, dict) else None)
            if sub is not None:
                old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                _walk(item, sub, old_item, f"{path}.{key}" if path else key, errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        old_by_key = {}
        if keys and isinstance(old, list):
            old_by_key = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(value):
            old_item = _MISSING
            if keys and isinstance(item, dict):
                old_item = old_by_key.get(tuple(item.get(k) for k in keys), _MISSING)
            _walk(item, schema["items"], old_item, f"{path}[{i}]", errors)
    rules = schema.get("x-kubernetes-validations")
    if rules:
        _check_rules(value, schema, old, path, errors)


def _check_rules(value: Any, schema: dict[str, Any], old: Any, path: str, errors: list) -> None:
    activation: dict[str, Any] = {"self": celpy.json_to_cel(value)}
    if old is not _MISSING:
        activation["oldSelf"] = celpy.json_to_cel(old)
    for rule in schema["x-kubernetes-validations"]:
        transition = _is_transition(rule)
        if transition and old is _MISSING and not rule.get("optionalOldSelf"):
            continue
        field = path or _ROOT
        if rule.get("fieldPath"):
            field = f"{path}{rule['fieldPath']}" if path else rule["fieldPath"].lstrip(".")
        try:
            ok = _program(rule["rule"]).evaluate(activation)
            if isinstance(ok, Exception):
                raise ok
        except Exception as exc:  # evaluation errors (missing key, type mismatch) reject the object
            detail = f"{_error_text(exc)} evaluating rule: {_rule_text(rule)}"
            errors.append(field_error(Cause.INVALID, path or _ROOT, detail, _schema_type(schema, value)))
            continue
        if ok is True or (hasattr(ok, "__bool__") and bool(ok)):
            continue
        errors.append(_failure(rule, field, value, _detail(rule, activation)))


_MEMBER = re.compile(r"no such member in mapping: '(.*)'")


def _error_text(exc: Exception) -> str:
    """cel-go's wording of the common evaluation errors (a missing key or field, an index out of range, a division
    by zero); cel-python reports them as (message, exception type, arguments)."""
    message, kind, args = (*exc.args, None, None, None)[:3]
    if kind is KeyError:
        member = _MEMBER.fullmatch(str(message))
        key = member.group(1) if member else str(args[0]) if args else ""
        return f"no such key: {key}"
    if kind is IndexError:
        return "index out of bounds"
    if kind is ZeroDivisionError:
        return "division by zero"
    return str(message) if message is not None else str(exc)


def _rule_text(rule: dict[str, Any]) -> str:
    return (rule.get("message") or rule["rule"]).strip()


def _detail(rule: dict[str, Any], activation: dict[str, Any]) -> str:
    if rule.get("messageExpression"):
        try:
            return str(_program(rule["messageExpression"]).evaluate(activation))
        except Exception:  # the real server falls back to the static message too
            pass
    return rule["message"].strip() if rule.get("message") else f"failed rule: {_rule_text(rule)}"


def _failure(rule: dict[str, Any], field: str, value: Any, detail: str) -> dict[str, Any]:
    """fieldErrorForReason: the value is shown for scalars only (an object or array is omitted)."""
    shown = not isinstance(value, (dict, list))
    reason = rule.get("reason") or Cause.INVALID
    if reason in (Cause.FORBIDDEN, Cause.REQUIRED):
        return field_error(reason, field, detail)
    if reason == Cause.DUPLICATE:
        return field_error(reason, field, "", value, show_value=shown)
    return field_error(Cause.INVALID, field, detail, value, show_value=shown)
