"""API errors rendered as metav1.Status objects with the codes and reasons a real API server uses."""

from __future__ import annotations

from typing import Any

from .gofmt import go_json, go_quote, go_value


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


_SHOWS_VALUE = (Cause.INVALID, Cause.NOT_SUPPORTED, Cause.TYPE, Cause.DUPLICATE, Cause.TOO_MANY)


def field_error(reason: str, field: str, detail: str, value: Any = None, *, show_value: bool = True) -> dict[str, Any]:
    """A cause dict; the message is apimachinery's field.Error.ErrorBody: the type, the bad value for the types that
    carry one (unless omitted, as for the objects and arrays a CEL rule rejects), then the detail."""
    text = _CAUSE_PREFIX.get(reason, "Invalid value")
    if reason in _SHOWS_VALUE and show_value:
        text += f": {render_value(value)}"
    if detail:
        text += f": {detail}"
    return {"reason": reason, "message": text, "field": field}


def render_value(value: Any) -> str:
    """A bad value as ErrorBody prints it: scalars with %v, strings with %q, the rest as JSON."""
    if isinstance(value, str):
        return go_quote(value)
    if value is None:
        return "null"
    if isinstance(value, (bool, float)):
        return go_value(value)
    if isinstance(value, (dict, list)):
        return go_json(value)
    return str(value)


def invalid(group: str, kind: str, name: str, causes: list[dict[str, Any]]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    # ErrorList.ToAggregate drops repeated messages; one left is printed bare, more in brackets.
    listed = list(dict.fromkeys(f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes))
    message = f'{qualified} "{name}" is invalid: {listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"}'
    return ApiError(422, "Invalid", message, {"name": name, "group": group, "kind": kind, "causes": causes})
