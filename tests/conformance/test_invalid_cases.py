"""The catalogue of invalid objects (tests/api/invalid_cases.yaml) is rejected by the real server as documented."""

from __future__ import annotations

from typing import Any

import pytest
from api_cases import build_case  # tests/api, put on sys.path by conftest.py
from conformance_kube import REPO, ApiError, Kube, collection_path, load_yaml

CATALOGUE = REPO / "tests" / "api" / "invalid_cases.yaml"
CASES: list[dict[str, Any]] = load_yaml(CATALOGUE) if CATALOGUE.exists() else []


@pytest.mark.skipif(not CASES, reason=f"{CATALOGUE.relative_to(REPO)} does not exist yet")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_invalid_case_is_rejected(kube: Kube, installed_crds: dict[str, dict[str, Any]], case: dict[str, Any]) -> None:
    base = load_yaml(REPO / case["example"])
    invalid = build_case(case)
    collection = collection_path(installed_crds[invalid["kind"]], base["metadata"]["namespace"])
    # The unpatched example passes, so the rejection below is the patch's doing.
    kube.create(collection, base, dryRun="All", fieldValidation="Strict")

    with pytest.raises(ApiError) as rejected:
        kube.create(collection, invalid, dryRun="All", fieldValidation="Strict")

    error = rejected.value
    assert error.status == 422, error
    assert error.body["reason"] == "Invalid"
    assert case["message"] in error.message, error.message
    if case.get("field"):
        matching = [c for c in error.causes if c.get("field") == case["field"]]
        assert any(case["message"] in c.get("message", "") for c in matching), error.causes
