"""Quantities in Kubernetes' own format: what is refused, and how a quantity is printed in messages."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from interp_operator.quantity import QUANTITY_PATTERN, format_quantity, parse_quantity


@pytest.mark.parametrize("text", ["1.5.3Gi", "one", "0.5.", "4 Gi", "1Zi", "--4", "1e", "Gi", "1.5Mi5"])
def test_malformed_quantities_are_refused_by_the_parser_and_the_pattern(text):
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)
    assert not re.match(QUANTITY_PATTERN, text)


@pytest.mark.parametrize(("text", "value"), [("1.5Gi", Fraction(3, 2) * 2**30), (".5", Fraction(1, 2)),
                                             ("2.", 2), ("1e3", 1000), ("1.5e-3", Fraction(3, 2000)), ("-4", -4)])
def test_well_formed_quantities(text, value):
    assert re.match(QUANTITY_PATTERN, text) and parse_quantity(text) == value


@pytest.mark.parametrize(("value", "shown"), [
    (32 * 2**30, "32Gi"), (Fraction(1, 2), "500m"), (8, "8"), (1536 * 2**20, "1536Mi"), (10**9, "1G"),
    (2000, "2k"), (Fraction(1, 10**4), "100u"), (0, "0"), (1000 * 2**10, "1000Ki"), (Fraction(1, 3), "0.333333"),
])
def test_quantities_are_printed_as_kubernetes_prints_them(value, shown):
    assert format_quantity(Fraction(value)) == shown
    if shown != "0.333333":
        assert parse_quantity(shown) == value


def test_an_unplaceable_gang_shows_its_request_in_kubernetes_units():
    from interp_operator.gang.placement import GangRequest, NodeInfo, place
    from interp_operator.quantity import parse_resources

    node = NodeInfo("a", {}, parse_resources({"cpu": "4", "memory": "16Gi"}))
    result = place(GangRequest(parse_resources({"cpu": "500m", "memory": "32Gi"}), 2, 2), [node], {})
    assert "(cpu=500m, memory=32Gi each)" in result.message, result.message
