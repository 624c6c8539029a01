"""API errors rendered as metav1.Status objects with the codes and reasons a real API server uses."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(group, plural)} "{name}" not found',
                    {"name": name, "group": group, "kind": plural})


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{_qualified(group, plural)} "{name}" already exists',
                    {"name": name, "group": group, "kind": plural})


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": {why}',
                    {"name": name, "group": group, "kind": plural})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)



def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)


class Cause:
    """One field error of a 422 Invalid answer."""

    REQUIRED = "FieldValueRequired"
    INVALID = "FieldValueInvalid"
    NOT_SUPPORTED = "FieldValueNotSupported"
    FORBIDDEN = "FieldValueForbidden"
    DUPLICATE = "FieldValueDuplicate"
    TOO_LONG = "FieldValueTooLong"
    TOO_MANY = "FieldValueTooMany"
    TYPE = "FieldValueTypeInvalid"


_CAUSE_PREFIX = {
    Cause.REQUIRED: "Required value", Cause.INVALID: "Invalid value", Cause.NOT_SUPPORTED: "Unsupported value",
    Cause.FORBIDDEN: "Forbidden", Cause.DUPLICATE: "Duplicate value", Cause.TOO_LONG: "Too long",
    Cause.TOO_MANY: "Too many", Cause.TYPE: "Invalid value",
}


def field_error(reason: str, field: str, detail: str, value: Any = None, *, show_value: bool = True) -> dict[str, Any]:
    """A cause dict; the message follows the apimachinery field.Error format."""
    prefix = _CAUSE_PREFIX.get(reason, "Invalid value")
    if reason in (Cause.INVALID, Cause.NOT_SUPPORTED, Cause.TYPE) and show_value:
        text = f"{prefix}: {_render(value)}: {detail}"
    else:
        text = f"{prefix}: {detail}" if detail else prefix
    return {"reason": reason, "message": text, "field": field}


def _render(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return '"object"' if isinstance(value, dict) else '"array"'
    return str(value)


def invalid(group: str, kind: str, name: str, causes: list[dict[str, Any]]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    listed = ", ".join(f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes)
    message = f'{qualified} "{name}" is invalid: {listed if len(causes) == 1 else "[" + listed + "]"}'
    return ApiError(422, "Invalid", message, {"name": name, "group": group, "kind": kind, "causes": causes})
