"""Each documented invalid object is rejected, with its message, by the models and by the generated CRD schema."""

from __future__ import annotations

import pydantic
import pytest
from api_cases import REPO, build_case, invalid_cases
from crd_schema import field_path, validate

from interp_operator.api import kind_info

CASES = invalid_cases()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_models_reject(case):
    body = build_case(case)
    with pytest.raises(pydantic.ValidationError) as raised:
        kind_info(body["kind"]).parse(body)
    errors = raised.value.errors()
    locations = [field_path(e["loc"]) for e in errors]
    if case["rule"] == "cel":
        assert any(case["message"] in e["msg"] and field_path(e["loc"]) == case["field"] for e in errors), errors
    else:
        assert any(case["field"].startswith(loc) for loc in locations), locations


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_crd_schema_rejects(case, crds):
    body = build_case(case)
    _, violations = validate(body, crds[body["kind"]])
    assert violations, "accepted"
    if case["rule"] == "cel":
        assert any(v.field == case["field"] and case["message"] in v.message for v in violations), violations
    else:
        assert any(v.field == case["field"] or v.field.startswith(case["field"]) or case["field"].startswith(v.field)
                   for v in violations), violations


def test_catalogue_is_documented():
    docs = (REPO / "docs" / "api.md").read_text()
    missing = [c["name"] for c in CASES if f"`{c['name']}`" not in docs]
    assert not missing, f"docs/api.md does not list {missing}"


def test_catalogue_covers_every_cel_rule(crds):
    messages = {c["message"] for c in CASES if c["rule"] == "cel"}
    rules = set()
    for crd in crds.values():
        stack = [crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]]
        while stack:
            node = stack.pop()
            rules |= {r["message"] for r in node.get("x-kubernetes-validations", ())}
            stack += list(node.get("properties", {}).values())
            stack += [node[k] for k in ("items", "additionalProperties") if isinstance(node.get(k), dict)]
    uncovered = [m for m in rules if not any(msg in m for msg in messages)]
    assert not uncovered, f"CEL rules without an invalid case: {uncovered}"
