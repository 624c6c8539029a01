"""Fixtures for the local control plane tests (the plugin lives in interp_operator.local.testing)."""

from __future__ import annotations

from typing import Any

import pytest
from localplane_support import WIDGET_CRD, WIDGETS, established

# The plane's fixtures (local_plane, kube_endpoint, kube_namespace...) come from the plugin tests/conftest.py loads.
from interp_operator.local.testing import wait_for


@pytest.fixture(scope="session")
def widget_crd(request: pytest.FixtureRequest) -> str:
    endpoint: Any = request.getfixturevalue("kube_endpoint")
    name = WIDGET_CRD["metadata"]["name"]
    if endpoint.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") \
            .status_code == 404:
        response = endpoint.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                         json=WIDGET_CRD)
        assert response.status_code == 201, response.text
    wait_for(lambda: established(endpoint, name), message="the Widget CRD never became Established")
    wait_for(lambda: endpoint.request("GET", WIDGETS).status_code == 200)
    return name
