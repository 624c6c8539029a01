"""The real API server accepts every generated CRD: structural schema, CEL rules that compile, names accepted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conformance_kube import WIDGET_CRD, ApiError, Kube, condition, install_crd, load_yaml, project_crd_files


@pytest.mark.parametrize("path", [*project_crd_files(), WIDGET_CRD], ids=lambda p: p.name)
def test_crd_is_accepted_and_established(kube: Kube, path: Path) -> None:
    crd = load_yaml(path)
    served = install_crd(kube, crd)

    assert condition(served, "NamesAccepted")["status"] == "True"
    assert condition(served, "NonStructuralSchema") is None, condition(served, "NonStructuralSchema")
    assert served["status"]["acceptedNames"]["kind"] == crd["spec"]["names"]["kind"]
    # Stored as generated: the server dropped no property, default or rule.
    for mine, theirs in zip(crd["spec"]["versions"], served["spec"]["versions"], strict=True):
        assert theirs["schema"] == mine["schema"]
        assert theirs.get("subresources") == mine.get("subresources")


def test_project_crds_are_generated() -> None:
    kinds = {load_yaml(p)["spec"]["names"]["kind"] for p in project_crd_files()}
    assert kinds == {"SAETrainingJob", "ActivationDump", "InterpInferenceService"}


def broken_widget_crd(**schema_change: Any) -> dict[str, Any]:
    crd = copy.deepcopy(load_yaml(WIDGET_CRD))
    crd["metadata"]["name"] = "gadgets.conformance.interp.dev"
    crd["spec"]["names"] = {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"}
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema.update(schema_change)
    return crd


# The server's own checks: an accepted CRD above means these passed.
@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        pytest.param(
            {"x-kubernetes-validations": [{"rule": "self.size >", "message": "m"}]},
            "x-kubernetes-validations[0].rule", "compilation failed", id="cel-syntax-error",
        ),
        pytest.param(
            {"x-kubernetes-validations": [{"rule": "self.nosuchfield == 1", "message": "m"}]},
            "x-kubernetes-validations[0].rule", "undefined field 'nosuchfield'", id="cel-unknown-field",
        ),
        pytest.param(
            {"properties": {"size": {"description": "no type"}}},
            "properties[size].type", "must not be empty for specified object fields", id="non-structural",
        ),
    ],
)
def test_invalid_crd_is_rejected(kube: Kube, change: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ApiError) as rejected:
        kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", broken_widget_crd(**change),
                    dryRun="All")
    assert rejected.value.status == 422, rejected.value
    assert message in rejected.value.message
    assert any(c.get("field", "").endswith(field) for c in rejected.value.causes), rejected.value.causes
