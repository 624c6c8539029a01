"""Values printed as the Go API server prints them, so that messages and table cells match it byte for byte.

A real server holds a custom resource as unstructured JSON (integers as int64, other numbers as float64) and
prints values with ``fmt``'s ``%v`` (error details, JSONPath text) or ``encoding/json`` (objects and arrays).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def go_float(value: float) -> str:
    """``fmt.Sprint(float64)``: the shortest digits, in exponent form when the exponent is < -4 or >= 6
    (``strconv``'s ``%g`` with the shortest precision)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # position of the decimal point after the first digit
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return prefix + text + "0" * (point - len(text))
    return f"{prefix}{text[:point]}.{text[point:]}"


def go_json(value: Any) -> str:
    """``json.Marshal`` of an unstructured value: keys sorted, compact, <, > and & escaped as Go escapes them."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def go_value(value: Any) -> str:
    """``fmt.Sprint`` of an unstructured scalar (strings bare, booleans lower case, null as ``<nil>``)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, (dict, list)):
        return go_json(value)
    return str(value)


def go_number(value: float) -> str:
    """A schema bound (``minimum``, ``maximum``, ``multipleOf``: float64 in Go) printed with ``%v``."""
    return go_float(float(value))


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
            "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """``strconv.Quote``: printable characters kept, the usual backslash escapes, other control bytes as \\xNN."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif not char.isprintable() and char != " ":
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
