"""Kubernetes resource quantities ("500m", "64Gi", 8) as exact numbers, for capacity arithmetic."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction

_SUFFIX = {
    "": Fraction(1), "m": Fraction(1, 1000), "u": Fraction(1, 10**6), "n": Fraction(1, 10**9),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12), "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
"""Kubernetes' own quantity format (the pattern of its OpenAPI ``Quantity``): a signed decimal number, then a binary
suffix (Ki..Ei), a decimal suffix (n, u, m, k, M..E) or a decimal exponent."""
_PATTERN = re.compile(QUANTITY_PATTERN)
_NUMBER = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?)(.*)$")


def parse_quantity(value: int | float | str) -> Fraction:
    """Parse a quantity exactly; raise ValueError with the offending text otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Fraction(value)
    text = value.strip()
    number = _NUMBER.match(text)
    if not _PATTERN.match(text) or number is None or number.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return Fraction(number.group(1)) * _SUFFIX[number.group(2)]


ResourceMap = dict[str, Fraction]


def parse_resources(values: Mapping[str, int | float | str]) -> ResourceMap:
    return {name: parse_quantity(v) for name, v in values.items()}


def add(a: ResourceMap, b: ResourceMap) -> ResourceMap:
    return {k: a.get(k, Fraction(0)) + b.get(k, Fraction(0)) for k in a.keys() | b.keys()}


def fits(request: ResourceMap, free: ResourceMap) -> bool:
    """Whether ``request`` fits in ``free``; a resource the node does not list counts as zero."""
    return all(amount <= free.get(name, Fraction(0)) for name, amount in request.items() if amount > 0)


_BINARY = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki")
_DECIMAL = ("E", "P", "T", "G", "M", "k")
_FRACTIONAL = ("m", "u", "n")


def format_quantity(value: Fraction) -> str:
    """A quantity as Kubernetes prints one: the largest suffix that keeps it a whole number (binary suffixes for
    multiples of 1024, as memory is written), e.g. 32Gi, 500m, 8; a value no suffix makes whole as a decimal."""
    if value.denominator == 1:
        whole = int(value)
        if whole and whole % 1024 == 0:
            return next(f"{whole // int(_SUFFIX[s])}{s}" for s in _BINARY if whole % int(_SUFFIX[s]) == 0)
        if whole and whole % 1000 == 0:
            return next(f"{whole // int(_SUFFIX[s])}{s}" for s in _DECIMAL if whole % int(_SUFFIX[s]) == 0)
        return str(whole)
    for suffix in _FRACTIONAL:
        scaled = value / _SUFFIX[suffix]
        if scaled.denominator == 1:
            return f"{int(scaled)}{suffix}"
    return f"{float(value):g}"


def subtract(a: ResourceMap, b: ResourceMap) -> ResourceMap:
    return {k: a.get(k, Fraction(0)) - b.get(k, Fraction(0)) for k in a.keys() | b.keys()}
