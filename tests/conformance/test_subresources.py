"""Status and scale subresources behave as the operator assumes.

The operator writes status only through /status and records status.observedGeneration, so it relies on: a status write
never changes spec nor bumps metadata.generation; a spec write ignores status and bumps generation; /scale reads and
writes spec.replicas and reports status.replicas and status.selector (kubectl scale, HorizontalPodAutoscalers).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conformance_kube import (
        WIDGET_CRD,
    ApiError,
    Kube,
    collection_path,
    example_files,
    load_yaml,
    model_object,
    project_crd_files,
    unique_name,
)

NAMESPACE = "conformance-subresources"


def example_of(kind: str) -> dict[str, Any]:
    if kind == "Widget":
        return {"apiVersion": "conformance.interp.dev/v1", "kind": "Widget", "metadata": {"name": "widget"},
                "spec": {"size": 3, "replicas": 2}}
    return next(b for b in map(load_yaml, example_files()) if b["kind"] == kind)


# A valid spec change per kind (every interp.dev kind names a model with a dtype).
SPEC_CHANGE = {
    "Widget": {"spec": {"size": 7}},
    "SAETrainingJob": {"spec": {"model": {"dtype": "float16"}}},
    "ActivationDump": {"spec": {"model": {"dtype": "float16"}}},
    "InterpInferenceService": {"spec": {"model": {"dtype": "float16"}}},
}
KINDS = [load_yaml(p)["spec"]["names"]["kind"] for p in project_crd_files()]
KINDS_WITH_SCALE = [
    load_yaml(p)["spec"]["names"]["kind"]
    for p in [*project_crd_files(), WIDGET_CRD]
    if "scale" in load_yaml(p)["spec"]["versions"][0].get("subresources", {})
]


def create(kube: Kube, crd: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    body = copy.deepcopy(example_of(kind))
    body["metadata"] = {"name": unique_name(kind.lower()), "namespace": NAMESPACE}
    path = f"{collection_path(crd, NAMESPACE)}/{body['metadata']['name']}"
    return path, kube.create(collection_path(crd, NAMESPACE), body)


@pytest.mark.parametrize("kind", [*KINDS, "Widget"])
def test_status_and_spec_writes_are_separate(kube: Kube, installed_crds: dict[str, Any], kind: str) -> None:
    path, created = create(kube, installed_crds[kind], kind)
    assert created["metadata"]["generation"] == 1

    status = {"observedGeneration": 1} if kind != "Widget" else {"phase": "Running"}
    after_status = kube.merge_patch(f"{path}/status", {"status": status, **SPEC_CHANGE[kind]})
    assert after_status["spec"] == created["spec"], "a /status write must not change spec"
    # The server defaults status like the models do (the operator parses what it reads back).
    expected_status = status if kind == "Widget" else model_object(dict(created, status=status))["status"]
    assert after_status["status"] == expected_status
    assert after_status["metadata"]["generation"] == 1

    after_spec = kube.merge_patch(path, {"status": {"unrelated": "ignored"}, **SPEC_CHANGE[kind]})
    assert after_spec["metadata"]["generation"] == 2
    assert after_spec["status"] == expected_status, "a main-resource write must not change status"
    assert after_spec["spec"] != created["spec"]

    metadata_only = kube.merge_patch(path, {"metadata": {"labels": {"team": "interp"}}})
    assert metadata_only["metadata"]["generation"] == 2, "metadata changes do not bump generation"


@pytest.mark.skipif(not KINDS_WITH_SCALE, reason="no CRD has a scale subresource")
@pytest.mark.parametrize("kind", KINDS_WITH_SCALE)
def test_scale_subresource(kube: Kube, installed_crds: dict[str, Any], kind: str) -> None:
    path, created = create(kube, installed_crds[kind], kind)
    replicas = created["spec"]["replicas"]
    selector = "app.kubernetes.io/instance=x,app.kubernetes.io/name=interp"
    kube.merge_patch(f"{path}/status", {"status": {"replicas": replicas, "selector": selector}})

    scale = kube.get(f"{path}/scale")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": replicas}
    assert scale["status"] == {"replicas": replicas, "selector": selector}

    scaled = kube.merge_patch(f"{path}/scale", {"spec": {"replicas": replicas + 3}})
    assert scaled["spec"]["replicas"] == replicas + 3
    stored = kube.get(path)
    assert stored["spec"]["replicas"] == replicas + 3
    assert stored["metadata"]["generation"] == 2
    assert {k: v for k, v in stored["spec"].items() if k != "replicas"} == {
        k: v for k, v in created["spec"].items() if k != "replicas"
    }

    # The CRD's schema applies through /scale too.
    with pytest.raises(ApiError) as rejected:
        kube.merge_patch(f"{path}/scale", {"spec": {"replicas": -1}})
    assert rejected.value.status == 422
    assert "spec.replicas" in rejected.value.message
