"""Resource quantities, shared by the gang engine's placement and interp-local's scheduler and downward API."""

from __future__ import annotations

from fractions import Fraction

import pytest

from interp_operator.quantity import fits, parse_quantity, parse_resources, subtract


@pytest.mark.parametrize(("text", "value"), [("500m", 0.5), ("64Gi", 64 * 2**30), ("1.5", 1.5), (8, 8), ("2k", 2000),
                                             ("1e3", 1000), ("1G", 10**9), ("-1", -1)])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "5Zi", "lots", True])
def test_bad_quantities(text):
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_exact_arithmetic_and_fit():
    free = subtract(parse_resources({"cpu": "4", "memory": "8Gi"}), parse_resources({"cpu": "3500m"}))
    assert free["cpu"] == Fraction(1, 2)
    assert fits(parse_resources({"cpu": "500m"}), free) and not fits(parse_resources({"cpu": "501m"}), free)
    assert not fits(parse_resources({"nvidia.com/gpu": 1}), free)  # a resource the node lacks counts as zero
