"""Failures on the local plane with the operator as a process: the backoff of a Pod-scope restart, and the reason
a workload gave reaching the object's condition and events."""

from __future__ import annotations

import time

from gang_cluster import condition, probe_job

from interp_operator.local.testing import wait_for


def _events(cluster, name: str) -> list[dict]:
    items = cluster.api("GET", f"/api/v1/namespaces/{cluster.namespace}/events").json()["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def test_a_pod_scope_restart_waits_for_the_backoff(cluster):
    restart = {"scope": "Pod", "backoffBaseSeconds": 3, "backoffMaxSeconds": 3, "backoffLimit": 5}
    cluster.create(probe_job("podretry", replicas=1, steps=200, step_seconds=0.2, restartPolicy=restart))
    cluster.wait_phase("podretry", "Running", timeout=60)
    first = cluster.pods("podretry")[0]["metadata"]["uid"]
    cluster.kill("podretry-1-0")
    killed = time.monotonic()

    def replaced():
        pods = [p for p in cluster.pods("podretry") if p["metadata"]["uid"] != first]
        return pods[0] if pods else None

    wait_for(replaced, timeout=30, interval=0.1)
    waited = time.monotonic() - killed
    # Without the backoff the rank came back within a reconcile (~0.3 s); the condition's time has 1 s resolution.
    assert waited >= 2.0, waited
    job = cluster.job("podretry")
    assert job["status"]["restarts"] == 1, [(e["reason"], e["message"]) for e in _events(cluster, "podretry")]
    assert any(e["reason"] == "PodRestarting" and "restarting that pod in 3s" in e["message"]
               for e in _events(cluster, "podretry"))


def test_the_workloads_error_reaches_the_condition_and_the_event(cluster):
    job = probe_job("badconfig", replicas=1)
    job["spec"]["gang"]["env"][0]["value"] = "0"  # INTERP_PROBE_STEPS=0: the probe exits 3, "invalid config"
    cluster.create(job)
    failed = cluster.wait_phase("badconfig", "Failed", timeout=60)
    message = condition(failed, "Failed")["message"]
    assert condition(failed, "Failed")["reason"] == "PermanentFailure"
    assert "exit code 3" in message and "invalid config: steps must be >= 1" in message, message
    # the event is posted after the status write that carries the condition
    events = wait_for(lambda: [e for e in _events(cluster, "badconfig") if e["reason"] == "PermanentFailure"],
                      timeout=30, interval=0.2)
    assert len(events) == 1 and "invalid config: steps must be >= 1" in events[0]["message"]
    # cleanPodPolicy Running (the default): the failed pod stays for its log.
    assert [p["status"]["phase"] for p in cluster.pods("badconfig")] == ["Failed"]


def test_an_output_claim_that_does_not_exist_is_named_in_a_condition(cluster):
    cluster.create(probe_job("noclaim", replicas=1, output={"claimName": "missing-claim", "subPath": "x"}))

    def told():
        job = cluster.job("noclaim")
        return job if any(c["type"] == "PodsScheduled" for c in job.get("status", {}).get("conditions", [])) else None

    job = wait_for(told, timeout=30, interval=0.2)
    scheduled = condition(job, "PodsScheduled")
    assert job["status"]["phase"] == "Pending" and scheduled["status"] == "False"
    assert 'persistentvolumeclaim "missing-claim" not found' in scheduled["message"], scheduled
    # the event is posted after the status write that carries the condition
    wait_for(lambda: "PodsUnschedulable" in [e["reason"] for e in _events(cluster, "noclaim")], timeout=30,
             interval=0.2)
    time.sleep(2)  # further reconciles of the same wait post nothing more
    assert [e["reason"] for e in _events(cluster, "noclaim")].count("PodsUnschedulable") == 1
