"""The chart's HA setup on interp-local: the peering CRDs and object as rendered, and two operator processes
started with the Deployment's own arguments, as two replicas of one release would run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import REPO, of_kind, render, the

from interp_operator.local.testing import wait_for

PEERING_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")


@dataclass
class Replicas:
    endpoint: Any
    namespace: str
    peering_path: str
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def peers(self) -> dict[str, Any]:
        response = self.endpoint.request("GET", self.peering_path)
        assert response.status_code == 200, response.text
        return response.json().get("status") or {}

    def reconciled_by(self, job: str) -> list[int]:
        """Which replicas logged a decision about this job."""
        return [i for i, log in enumerate(self.logs) if f'"job": "{job}"' in log.read_text()]

    def create_dump(self, name: str) -> None:
        dump = yaml.safe_load((REPO / "examples" / "activationdump.yaml").read_text())
        dump["metadata"] = {"name": name, "namespace": self.namespace}
        dump["spec"]["parallelism"] = 1024  # never fits: the operator decides and reports, no pod starts
        response = self.endpoint.request(
            "POST", f"/apis/interp.dev/v1alpha1/namespaces/{self.namespace}/activationdumps", json=dump)
        assert response.status_code == 201, response.text

    def phase(self, name: str) -> str | None:
        response = self.endpoint.request(
            "GET", f"/apis/interp.dev/v1alpha1/namespaces/{self.namespace}/activationdumps/{name}")
        return (response.json().get("status") or {}).get("phase")


def create(endpoint: Any, path: str, body: dict[str, Any]) -> None:
    response = endpoint.request("POST", path, json=body)
    assert response.status_code in (201, 409), response.text


def operator_command(objects: list[dict[str, Any]]) -> list[str]:
    """The Deployment's command line, with ports of 0: two processes on one machine cannot share them."""
    (container,) = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    for flag in ("--metrics-port", "--health-port"):
        args[args.index(flag) + 1] = "0"
    assert container["command"] == ["interp-operator"]
    return [sys.executable, "-P", "-m", "interp_operator.cli", *args]


@pytest.fixture(scope="module")
def replicas(kube_endpoint: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    namespace = f"peering-{uuid.uuid4().hex[:6]}"
    create(kube_endpoint, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": namespace}})
    objects = render({"replicas": 2, "watchNamespaces": [namespace]}, include_crds=True)
    for crd in of_kind(objects, "CustomResourceDefinition"):
        create(kube_endpoint, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        create(kube_endpoint, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
               yaml.safe_load(path.read_text()))
    peering = the(objects, "KopfPeering")
    base = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings"
    wait_for(lambda: kube_endpoint.request("GET", base).status_code == 200, message="KopfPeering never served")
    create(kube_endpoint, base, peering)

    logs = [tmp_path_factory.mktemp("replica") / "operator.log" for _ in range(2)]
    env = os.environ | {"KUBECONFIG": str(kube_endpoint.kubeconfig), "INTERP_LOG_FORMAT": "json",
                        "HF_HUB_OFFLINE": "1"}
    command = operator_command(objects)
    processes = [subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    try:
        yield Replicas(kube_endpoint, namespace, f"{base}/{peering['metadata']['name']}", processes, logs)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        kube_endpoint.request("DELETE", f"/api/v1/namespaces/{namespace}")


def test_both_replicas_join_the_peering_the_chart_renders(replicas: Replicas) -> None:
    wait_for(lambda: len(replicas.peers()) == 2, timeout=60,
             message="the two replicas never both appeared in the KopfPeering's status")
    for identity, peer in replicas.peers().items():
        assert {"priority", "lifetime", "lastseen"} <= peer.keys(), identity
    assert all(process.poll() is None for process in replicas.processes)


def test_exactly_one_replica_reconciles_and_the_standby_takes_over(replicas: Replicas) -> None:
    wait_for(lambda: len(replicas.peers()) == 2, timeout=60, message="the replicas never joined the peering")
    replicas.create_dump("first")
    wait_for(lambda: replicas.phase("first") is not None, timeout=30, message="no replica reconciled the job")
    (active,) = replicas.reconciled_by("first")
    replicas.processes[active].terminate()
    replicas.processes[active].wait(15)
    replicas.create_dump("second")
    wait_for(lambda: replicas.phase("second") is not None, timeout=60, message="the standby never took over")
    assert replicas.reconciled_by("second") == [1 - active]
