"""The operator as a real process against the local control plane, on nodes of its own (a pool of 4 GPU nodes in
two racks), running the gang self-test workload."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from gang_cluster import NODES, POOL, RACK, REPO, Cluster, Operator

from interp_operator.local.nodes import NodeConfig


@pytest.fixture(scope="session")
def gang_nodes(local_plane):
    for name, rack in NODES.items():
        local_plane.call(local_plane.kubelet.add_node,
                         NodeConfig(name, cpu="8", memory="32Gi", gpus=1, labels={**POOL, RACK: rack}))
    return list(NODES)


@pytest.fixture(scope="session")
def crds_installed(kube_endpoint):
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        response = kube_endpoint.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
        assert response.status_code in (201, 409), response.text
    return True


@pytest.fixture(scope="session")
def operator(kube_endpoint, crds_installed, gang_nodes, tmp_path_factory):
    # The pods' `python` is this interpreter: the local environment is the image.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    running = Operator(kube_endpoint.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def cluster(kube_endpoint, kube_namespace, local_plane, operator):
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}
    response = kube_endpoint.request("POST", f"/api/v1/namespaces/{kube_namespace}/persistentvolumeclaims", json=claim)
    assert response.status_code == 201, response.text
    return Cluster(kube_endpoint, kube_namespace, local_plane)


@pytest.fixture
def trainer_operator(operator, kube_endpoint, tmp_path):
    """The operator running the real SAE trainer instead of the gang self-test, for one test; the session's
    operator is stopped meanwhile (two would reconcile the same jobs) and started again after."""
    operator.stop()
    # Progress every second: a short test job may run less than the default 10 s between two polls.
    real = Operator(kube_endpoint.kubeconfig, tmp_path / "trainer-operator.log", workload_modules="",
                    env={"INTERP_PROGRESS_INTERVAL_S": "1"})
    real.start()
    yield real
    real.stop()
    operator.start()
