"""pytest plugin: a local control plane per test session, and client-side handles on it.

Use it from a test folder by importing the fixtures into its conftest (``from interp_operator.local.testing
import kube_endpoint, kube_namespace, local_plane, local_plane_config``), or with
``pytest_plugins = ["interp_operator.local.testing"]`` in the top-level conftest.

Fixtures
- ``local_plane``: the running :class:`ControlPlane` (in-process; for fault injection and inspection).
- ``kube_endpoint``: a client-only view (kubeconfig path, base URL, HTTP session, ``kubernetes`` ApiClient).
  With ``INTERP_TEST_KUBECONFIG`` set it points at that cluster instead, so the very same tests run against a
  real API server.
- ``kube_namespace``: a fresh namespace on ``kube_endpoint``, deleted after the test.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from .client import session_for
from .nodes import NodeConfig
from .plane import ControlPlane, PlaneConfig


@dataclass
class KubeEndpoint:
    kubeconfig: Path
    base_url: str
    session: requests.Session
    local: ControlPlane | None = None

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        # Passed explicitly: requests lets REQUESTS_CA_BUNDLE override a session's own verify setting.
        kwargs.setdefault("verify", self.session.verify)
        return self.session.request(method, self.url(path), timeout=kwargs.pop("timeout", 30), **kwargs)

    def api_client(self) -> Any:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)


CHAOS_TAINT = {"key": "interp.dev/chaos", "value": "true", "effect": "NoSchedule"}


@pytest.fixture(scope="session")
def local_plane_config(tmp_path_factory: pytest.TempPathFactory) -> PlaneConfig:
    """Override in a conftest to change nodes or timings. The default: two GPU nodes in different zones and
    racks, and a tainted node that only pods tolerating ``interp.dev/chaos`` land on (for fault tests)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return PlaneConfig(
        bookmark_interval=0.5, restart_backoff=0.2, eviction_seconds=1.0,
        pod_network=f"127.{1 + int(worker) % 250 if worker.isdigit() else 1}.0.0/16",  # one per pytest worker
        state_dir=tmp_path_factory.mktemp("interp-local"),
        nodes=[
            NodeConfig("node-a", cpu="8", memory="32Gi", gpus=2,
                       labels={"topology.kubernetes.io/zone": "zone-a", "topology.kubernetes.io/rack": "rack-1"}),
            NodeConfig("node-b", cpu="8", memory="32Gi", gpus=2,
                       labels={"topology.kubernetes.io/zone": "zone-b", "topology.kubernetes.io/rack": "rack-2"}),
            NodeConfig("node-chaos", cpu="4", memory="8Gi", taints=[CHAOS_TAINT],
                       labels={"interp.dev/chaos": "true"}),
        ],
    )


@pytest.fixture(scope="session")
def local_plane(local_plane_config: PlaneConfig) -> Iterator[ControlPlane]:
    with ControlPlane.in_thread(local_plane_config) as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_endpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> KubeEndpoint:
    external = os.environ.get("INTERP_TEST_KUBECONFIG")
    if external:
        path = Path(external)
        base, session = session_for(path)
        return KubeEndpoint(path, base, session)
    plane: ControlPlane = request.getfixturevalue("local_plane")
    path = plane.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    base, session = session_for(path)
    return KubeEndpoint(path, base, session, plane)


@pytest.fixture
def kube_namespace(kube_endpoint: KubeEndpoint) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    response = kube_endpoint.request("POST", "/api/v1/namespaces",
                                     json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    if response.status_code == 404 and kube_endpoint.local is None:
        # A CRD-only API server (the conformance tier's) has no core/v1; it stores custom resources in any
        # namespace, since it runs no namespace-lifecycle admission.
        yield name
        return
    response.raise_for_status()
    yield name
    kube_endpoint.request("DELETE", f"/api/v1/namespaces/{name}")


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02, message: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
