"""A reconcile that fails — wherever in the loop — is reported on the object and retried within seconds; the loop
never dies quietly. The operator runs in this process (kopf's KopfRunner) so that a failure can be injected."""

from __future__ import annotations

import time

import pytest
from gang_cluster import probe_job
from kubernetes.client.rest import ApiException

from interp_operator.kube import Kube
from interp_operator.local.testing import wait_for
from interp_operator.progress import ProgressBoard

NOWHERE = {"interp.dev/test-pool": "none"}  # no node matches: the job waits Pending, its status says why


def _condition(job: dict, type_: str) -> dict | None:
    return next((c for c in (job.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


@pytest.fixture
def in_process_operator(operator, kube_endpoint, monkeypatch):
    """The session's operator stopped (two would reconcile the same objects) while the test runs one in-process."""
    monkeypatch.setenv("KUBECONFIG", str(kube_endpoint.kubeconfig))
    monkeypatch.setenv("INTERP_WORKLOAD_MODULES", "SAETrainingJob=interp_workloads.probe")
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kube_endpoint.kubeconfig))
    operator.stop()
    yield
    operator.start()


def _fail_once(monkeypatch, owner: type, attribute: str, error: Exception) -> list[int]:
    """Make ``owner.attribute`` raise ``error`` on its first call only; the calls are counted in the list."""
    original, calls = getattr(owner, attribute), []

    if attribute == "refresh":
        async def injected(self, *args):
            calls.append(1)
            if len(calls) == 1:
                raise error
            return await original(self, *args)
    else:
        def injected(self, *args):
            calls.append(1)
            if len(calls) == 1:
                raise error
            return original(self, *args)

    monkeypatch.setattr(owner, attribute, injected)
    return calls


@pytest.mark.parametrize(("owner", "attribute", "error", "said"), [
    # before the reconcile: polling the pods' progress
    (ProgressBoard, "refresh", RuntimeError("injected: the status endpoints could not be polled"),
     "RuntimeError: injected: the status endpoints could not be polled"),
    # inside it: the status write
    (Kube, "patch_status", ApiException(status=500, reason="Internal Server Error"),
     "API error 500 Internal Server Error"),
])
def test_a_failed_first_reconcile_is_reported_and_retried(in_process_operator, cluster, monkeypatch, owner, attribute,
                                                          error, said):
    from kopf.testing import KopfRunner

    calls = _fail_once(monkeypatch, owner, attribute, error)
    name = f"flaky-{attribute.replace('_', '-')}"
    with KopfRunner(["run", "-A", "--standalone", "-m", "interp_operator.handlers"], timeout=60) as runner:
        cluster.create(probe_job(name, replicas=1, gang={"nodeSelector": NOWHERE}))
        reported = wait_for(lambda: _condition(cluster.job(name), "Reconciled"), timeout=15, interval=0.1,
                            message=f"the failure was never reported: {cluster.job(name).get('status')}")
        assert (reported["status"], reported["reason"]) == ("False", "ReconcileError"), reported
        assert reported["message"] == f"{said}; retrying in 5s"
        seen_failing = time.monotonic()
        # kopf's own retry of a crashed daemon comes after a minute; the loop's comes after 5 s.
        job = wait_for(lambda: (j := cluster.job(name)).get("status", {}).get("phase") and
                       (_condition(j, "Reconciled") or {}).get("status") == "True" and j, timeout=15, interval=0.1,
                       message=f"never reconciled after the failure: {cluster.job(name).get('status')}")
        # ... and not sooner, although the report itself is an event on the object that wakes its loop
        assert time.monotonic() - seen_failing > 3.5
        assert job["status"]["phase"] == "Pending" and _condition(job, "PodsPlaced")["status"] == "False"
        events = cluster.api("GET", f"/api/v1/namespaces/{cluster.namespace}/events").json()["items"]
        assert [e["message"] for e in events if e["reason"] == "ReconcileError"] == [f"{said}; retrying in 5s"]
    assert runner.exception is None, runner.exception
    assert len(calls) >= 2
