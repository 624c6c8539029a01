"""The wrapper main's own contract (apiserver/main.go): what it adds to the upstream server works as documented."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conformance_kube import ApiError, Kube

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def test_legacy_discovery_lists_established_crd_groups(kube: Kube, installed_crds: dict[str, Any]) -> None:
    groups = {g["name"]: g for g in kube.get("/apis")["groups"]}
    assert "apiextensions.k8s.io" in groups
    for crd in installed_crds.values():
        group = groups[crd["spec"]["group"]]
        served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
        assert [v["version"] for v in group["versions"]] == served
        assert group["preferredVersion"]["version"] == served[0]
    widgets = kube.get("/apis/conformance.interp.dev/v1")
    assert {r["name"] for r in widgets["resources"]} == {"widgets", "widgets/status", "widgets/scale"}


def test_aggregated_discovery_lists_crd_resources(kube: Kube, installed_crds: dict[str, Any]) -> None:
    discovery = kube.request("GET", "/apis", accept=AGGREGATED)
    assert discovery["kind"] == "APIGroupDiscoveryList"
    resources = {
        (group["metadata"]["name"], resource["resource"])
        for group in discovery["items"] for version in group["versions"] for resource in version["resources"]
    }
    for crd in installed_crds.values():
        assert (crd["spec"]["group"], crd["spec"]["names"]["plural"]) in resources


def test_core_group_is_empty_not_missing(kube: Kube) -> None:
    assert kube.get("/api")["versions"] == []


@pytest.mark.parametrize("token", ["", "not-the-token"], ids=["anonymous", "wrong-token"])
def test_only_the_admin_token_is_accepted(kube: Kube, token: str) -> None:
    with pytest.raises(ApiError) as rejected:
        kube.request("GET", "/apis", token=token)
    assert rejected.value.status == 401


def test_openapi_v2_publishes_crd_schemas(kube: Kube, installed_crds: dict[str, Any]) -> None:
    # Published by a controller shortly after the CRD is established.
    deadline = time.monotonic() + 30
    while True:
        definitions = kube.get("/openapi/v2")["definitions"]
        if "dev.interp.conformance.v1.Widget" in definitions:
            break
        assert time.monotonic() < deadline, sorted(definitions)[-10:]
        time.sleep(0.2)
    assert definitions["dev.interp.conformance.v1.Widget"]["properties"]["spec"]["required"] == ["size"]
