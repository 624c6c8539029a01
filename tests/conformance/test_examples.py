"""Every example is accepted by the real server, and the server's defaulting and pruning give the models' objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydantic
import pytest
from conformance_kube import ApiError, Kube, collection_path, example_files, load_yaml, model_object, unique_name

EXAMPLES = example_files()
NAMESPACE = "conformance"


def with_fresh_name(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["metadata"] = {"name": unique_name(body["metadata"]["name"]), "namespace": NAMESPACE}
    return body


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_and_defaulted_like_the_models(
    kube: Kube, installed_crds: dict[str, dict[str, Any]], path: Path
) -> None:
    body = with_fresh_name(load_yaml(path))
    collection = collection_path(installed_crds[body["kind"]], NAMESPACE)

    dry_run = kube.create(collection, body, dryRun="All", fieldValidation="Strict")
    created = kube.create(collection, body, fieldValidation="Strict")
    stored = kube.get(f"{collection}/{body['metadata']['name']}")

    expected = model_object(body)["spec"]
    assert dry_run["spec"] == expected
    assert created["spec"] == expected
    assert stored["spec"] == expected
    assert stored["metadata"]["generation"] == 1
    assert "status" not in stored
    # The operator reads stored objects back through the models: a fixed point.
    assert model_object(stored)["spec"] == stored["spec"]


def unknown_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The example with fields the schema does not know, at the top of spec and one level down."""
    body = copy.deepcopy(body)
    body["spec"]["notAField"] = 1
    nested = next(key for key, value in body["spec"].items() if isinstance(value, dict))
    body["spec"][nested]["alsoNotAField"] = {"x": 1}
    return body


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_unknown_fields_are_pruned_to_the_models_object(
    kube: Kube, installed_crds: dict[str, dict[str, Any]], path: Path
) -> None:
    clean = with_fresh_name(load_yaml(path))
    noisy = unknown_fields(clean)
    collection = collection_path(installed_crds[clean["kind"]], NAMESPACE)

    pruned = kube.create(collection, noisy, fieldValidation="Ignore")

    assert pruned["spec"] == model_object(clean)["spec"]
    # Strict clients (kubectl, the operator's own writes) are told instead; the models reject the same fields.
    with pytest.raises(ApiError) as rejected:
        kube.create(collection, with_fresh_name(noisy), dryRun="All", fieldValidation="Strict")
    assert rejected.value.status == 400
    assert 'unknown field "spec.notAField"' in rejected.value.message
    with pytest.raises(pydantic.ValidationError, match="notAField"):
        model_object(noisy)
