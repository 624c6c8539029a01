"""The chart's HA setup on interp-local: the peering CRDs and object as rendered with the default values, and
as many operator processes as the Deployment has replicas, started with its own arguments, as the replicas of one
release would run: one reconciles, and a standby takes over after a clean stop and after a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_chart import REPO, of_kind, render, the

from interp_operator.local.testing import wait_for

# kopf's default peering lifetime: a peer whose last keep-alive is older than this is dead to the others.
PEERING_LIFETIME_S = 60


@dataclass
class Replicas:
    endpoint: Any
    namespace: str
    peering_path: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    launched: int = 0

    def start(self, slot: int) -> None:
        """Start the replica of this slot, or, as a Deployment replaces a pod, a new one in its place."""
        self.launched += 1
        log = self.log_dir / f"replica-{self.launched}.log"
        process = subprocess.Popen(self.command, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        if slot < len(self.processes):
            self.processes[slot], self.logs[slot] = process, log
        else:
            self.processes.append(process)
            self.logs.append(log)

    def stop_all(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()

    def peers(self) -> dict[str, Any]:
        response = self.endpoint.request("GET", self.peering_path)
        assert response.status_code == 200, response.text
        return response.json().get("status") or {}

    def reconciled_by(self, job: str) -> list[int]:
        """Which replicas logged a decision about this job."""
        return [i for i, log in enumerate(self.logs) if f'"job": "{job}"' in log.read_text()]

    def reconciler_of(self, job: str, timeout: float) -> int:
        """The one replica that reconciled this new job: it set a phase and logged its decision."""
        wait_for(lambda: self.phase(job) is not None and self.reconciled_by(job), timeout=timeout,
                 message=f"no replica reconciled {job}")
        (active,) = self.reconciled_by(job)
        return active

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
    objects = render({"watchNamespaces": [namespace]}, include_crds=True)
    for crd in of_kind(objects, "CustomResourceDefinition"):
        create(kube_endpoint, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        create(kube_endpoint, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
               yaml.safe_load(path.read_text()))
    peering = the(objects, "KopfPeering")
    base = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings"
    wait_for(lambda: kube_endpoint.request("GET", base).status_code == 200, message="KopfPeering never served")
    create(kube_endpoint, base, peering)

    env = os.environ | {"KUBECONFIG": str(kube_endpoint.kubeconfig), "INTERP_LOG_FORMAT": "json",
                        "HF_HUB_OFFLINE": "1"}
    group = Replicas(kube_endpoint, namespace, f"{base}/{peering['metadata']['name']}", operator_command(objects),
                     env, tmp_path_factory.mktemp("replicas"))
    for slot in range(the(objects, "Deployment")["spec"]["replicas"]):
        group.start(slot)
    try:
        yield group
    finally:
        group.stop_all()
        kube_endpoint.request("DELETE", f"/api/v1/namespaces/{namespace}")


def test_the_default_replicas_join_the_peering_the_chart_renders(replicas: Replicas) -> None:
    assert len(replicas.processes) == 2, "the chart's default is one active replica and one standby"
    wait_for(lambda: len(replicas.peers()) == 2, timeout=60,
             message="the two replicas never both appeared in the KopfPeering's status")
    for identity, peer in replicas.peers().items():
        assert {"priority", "lifetime", "lastseen"} <= peer.keys(), identity
    priorities = {peer["priority"] for peer in replicas.peers().values()}
    assert len(priorities) == 2, "replicas sharing the highest priority would all pause"
    assert all(process.poll() is None for process in replicas.processes)


def test_exactly_one_replica_reconciles_and_the_standby_takes_over_a_clean_stop(replicas: Replicas) -> None:
    wait_for(lambda: len(replicas.peers()) == 2, timeout=60, message="the replicas never joined the peering")
    replicas.create_dump("first")
    active = replicas.reconciler_of("first", timeout=30)
    replicas.processes[active].terminate()
    replicas.processes[active].wait(15)
    # A clean stop removes the replica's entry from the peering, so the standby resumes at once.
    stopped = time.monotonic()
    replicas.create_dump("second")
    assert replicas.reconciler_of("second", timeout=20) == 1 - active
    assert time.monotonic() - stopped < 20


@pytest.mark.slow
def test_a_standby_takes_over_a_crashed_replica_within_the_peering_lifetime(replicas: Replicas) -> None:
    """SIGKILL leaves the crashed replica's entry behind: the standby waits until its lease runs out."""
    stopped = next(slot for slot, process in enumerate(replicas.processes) if process.poll() is not None)
    replicas.start(stopped)  # as the Deployment replaces the pod that stopped
    wait_for(lambda: len(replicas.peers()) == 2, timeout=60, message="the new replica never joined the peering")
    replicas.create_dump("third")
    active = replicas.reconciler_of("third", timeout=30)
    replicas.processes[active].kill()
    replicas.processes[active].wait(15)
    killed = time.monotonic()
    replicas.create_dump("fourth")
    assert replicas.reconciler_of("fourth", timeout=PEERING_LIFETIME_S + 30) == 1 - active
    took_over_s = time.monotonic() - killed
    print(f"standby took over {took_over_s:.1f} s after SIGKILL")
    assert took_over_s < PEERING_LIFETIME_S + 15
