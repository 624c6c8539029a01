"""Every example is valid for the models and for the generated CRD schema, and both default it identically."""

from __future__ import annotations

import pytest
from api_cases import example_paths, load_yaml
from crd_schema import validate

from interp_operator.api import kind_info


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_is_accepted_by_models_and_schema(path, crds):
    body = load_yaml(path)
    info = kind_info(body["kind"])
    info.parse(body)
    _, violations = validate(body, crds[info.kind])
    assert violations == []


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_server_defaulting_equals_model_defaulting(path, crds):
    body = load_yaml(path)
    info = kind_info(body["kind"])
    defaulted, _ = validate(body, crds[info.kind])
    assert defaulted["spec"] == info.parse(body).to_json_dict()["spec"]


def test_every_kind_has_an_example():
    kinds = {load_yaml(p)["kind"] for p in example_paths()}
    assert kinds == {"SAETrainingJob", "ActivationDump", "InterpInferenceService"}
