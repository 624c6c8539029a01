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
_PATTERN = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: int | float | str) -> Fraction:
    """Parse a quantity exactly; raise ValueError with the offending text otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Fraction(value)
    match = _PATTERN.match(value.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.groups()
    return Fraction(number) * _SUFFIX[suffix]


ResourceMap = dict[str, Fraction]


def parse_resources(values: Mapping[str, int | float | str]) -> ResourceMap:
    return {name: parse_quantity(v) for name, v in values.items()}


def add(a: ResourceMap, b: ResourceMap) -> ResourceMap:
    return {k: a.get(k, Fraction(0)) + b.get(k, Fraction(0)) for k in a.keys() | b.keys()}


def fits(request: ResourceMap, free: ResourceMap) -> bool:
    """Whether ``request`` fits in ``free``; a resource the node does not list counts as zero."""
    return all(amount <= free.get(name, Fraction(0)) for name, amount in request.items() if amount > 0)


def subtract(a: ResourceMap, b: ResourceMap) -> ResourceMap:
    return {k: a.get(k, Fraction(0)) - b.get(k, Fraction(0)) for k in a.keys() | b.keys()}
