"""Fixtures of the SDK tests: a local control plane of their own with the real operator, a namespace with a PVC holding
a tiny model and corpus, and SDK clients on it.

The plane is separate from the suite's shared one on purpose: the gang tests run an operator of their own on that
one, and two operators must never reconcile the same objects. Its pod network differs from every pytest worker's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from gang_cluster import REPO, Operator

from interp_operator.local.client import session_for
from interp_operator.local.nodes import NodeConfig
from interp_operator.local.plane import ControlPlane, PlaneConfig
from interp_operator.local.testing import KubeEndpoint, wait_for
from interp_operator.sdk import Client
from interp_workloads.testing import build_tiny_model, write_corpus

# This folder's helper module (sdk_recording) is imported by name, like the shared helpers on pytest's pythonpath.
sys.path.append(str(Path(__file__).parent))

NAMESPACE = "sdk"
CLAIM = "data"


@pytest.fixture(scope="session")
def sdk_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    network = 200 + (int(worker) % 50 if worker.isdigit() else 0)
    config = PlaneConfig(
        bookmark_interval=0.5, restart_backoff=0.2, eviction_seconds=1.0, pod_network=f"127.{network}.0.0/16",
        state_dir=tmp_path_factory.mktemp("sdk-plane"),
        nodes=[NodeConfig(f"sdk-{i}", cpu="8", memory="32Gi", gpus=1,
                          labels={"topology.kubernetes.io/rack": "rack-1"}) for i in range(2)],
    )
    with ControlPlane.in_thread(config) as plane:
        yield plane


@pytest.fixture(scope="session")
def sdk_endpoint(sdk_plane, tmp_path_factory) -> KubeEndpoint:
    path = sdk_plane.write_kubeconfig(tmp_path_factory.mktemp("sdk-kube") / "config")
    base, session = session_for(path)
    endpoint = KubeEndpoint(path, base, session, sdk_plane)
    for crd_file in sorted((REPO / "crds").glob("*.yaml")):
        response = endpoint.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                    json=yaml.safe_load(crd_file.read_text()))
        assert response.status_code in (201, 409), response.text
    for kind in ("namespaces", f"namespaces/{NAMESPACE}/persistentvolumeclaims"):
        body = ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}} if kind == "namespaces" else
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM},
                 "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
        response = endpoint.request("POST", f"/api/v1/{kind}", json=body)
        assert response.status_code == 201, response.text
    wait_for(lambda: endpoint.request("GET", "/apis/interp.dev/v1alpha1").status_code == 200, timeout=10)
    return endpoint


@pytest.fixture(scope="session")
def sdk_operator(sdk_endpoint, tmp_path_factory) -> Iterator[Operator]:
    # The pods' `python` is this interpreter: the local environment is the image.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    running = Operator(sdk_endpoint.kubeconfig, tmp_path_factory.mktemp("sdk-operator") / "operator.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def mounts(sdk_plane) -> str:
    """The INTERP_MOUNTS mapping of every claim of the plane (interp-local's volumes are directories)."""
    return f"*={sdk_plane.state_dir}/volumes/{{namespace}}/{{claim}}"


@pytest.fixture(scope="session")
def volume(sdk_plane, sdk_endpoint) -> Path:
    root = sdk_plane.state_dir / "volumes" / NAMESPACE / CLAIM
    build_tiny_model("gpt2", root / "model", n_layers=2)
    write_corpus(root / "corpus" / "part-0.jsonl", documents=40)
    return root


@pytest.fixture
def sdk(sdk_endpoint, sdk_operator, volume, mounts) -> Client:
    return Client(sdk_endpoint.kubeconfig, namespace=NAMESPACE, mounts=mounts)


@pytest.fixture
def cli_env(sdk_endpoint, sdk_operator, volume, mounts) -> dict[str, str]:
    """Environment of an interpctl subprocess on the plane."""
    return os.environ | {"KUBECONFIG": str(sdk_endpoint.kubeconfig), "INTERP_MOUNTS": mounts,
                         "PYTHONSAFEPATH": "1"}
