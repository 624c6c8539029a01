"""The first object of a fresh cluster is reconciled at once, whether it was applied before the operator started or
the moment after: each round is a new control plane and a new operator process, so startup races get their chance."""

from __future__ import annotations

import json

import pytest
import yaml
from gang_cluster import REPO, Operator, probe_job

from interp_operator.local.client import session_for
from interp_operator.local.plane import ControlPlane, PlaneConfig
from interp_operator.local.testing import wait_for

ROUNDS = 2
JOBS = "/apis/interp.dev/v1alpha1/namespaces/first/saetrainingjobs"


@pytest.mark.parametrize("applied", ["before the operator starts", "right after it starts"])
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_the_first_object_of_a_fresh_cluster_is_reconciled(tmp_path, applied, round_):
    # API only: the first reconcile writes the status before any pod, and no node matches, so none is made.
    with ControlPlane.in_thread(PlaneConfig(state_dir=tmp_path / "state", run_pods=False, nodes=[])) as plane:
        kubeconfig = plane.write_kubeconfig(tmp_path / "kubeconfig")
        base, session = session_for(kubeconfig)

        def call(method: str, path: str, body: dict, expected: int = 201) -> None:
            response = session.request(method, base + path, json=body, verify=session.verify, timeout=30)
            assert response.status_code == expected, response.text

        for path in sorted((REPO / "crds").glob("*.yaml")):
            call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(path.read_text()))
        call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "first"}})
        operator = Operator(kubeconfig, tmp_path / "operator.log")
        if applied.startswith("before"):
            call("POST", JOBS, probe_job("first"))
        operator.start()
        try:
            if not applied.startswith("before"):
                call("POST", JOBS, probe_job("first"))

            def status() -> dict:
                return session.get(f"{base}{JOBS}/first", verify=session.verify, timeout=30).json().get("status") or {}

            # Starting the operator takes a few seconds on a busy machine; kopf's retry of a failed daemon, a minute.
            reconciled = wait_for(lambda: status().get("phase") and status(), timeout=45, interval=0.2,
                                  message=f"never reconciled: {status()}; operator log:\n"
                                          f"{operator.log.read_text()[-3000:]}")
        finally:
            operator.stop()
    assert reconciled["phase"] == "Pending" and reconciled["attempt"] == 0, reconciled
    failures = [json.loads(line)["event"] for line in operator.log.read_text().splitlines()
                if line.startswith("{") and json.loads(line).get("level") in ("error", "critical")]
    assert failures == [], failures
