"""The gang engine end to end: the operator process, the local control plane, real torch.distributed gangs.

Each test is one behaviour of docs/gang-engine.md, with the fault injected the way a cluster would produce it.
"""

from __future__ import annotations

import json

from gang_cluster import NODES, condition, probe_job, settle

from interp_operator.local.testing import wait_for


def test_gang_runs_in_one_rack_and_succeeds(cluster, operator):
    cluster.create(probe_job("ok", replicas=2))
    job = cluster.wait_phase("ok", "Succeeded")
    status = job["status"]
    assert status["placement"]["topologyKey"] == "topology.kubernetes.io/rack"
    racks = {NODES[node] for node in status["placement"]["nodes"]}
    assert len(racks) == 1 and status["worldSize"] == 2 and status["restarts"] == 0
    assert cluster.checkpoint("ok") == {"step": 3, "worldSizes": [2]}  # a real 2-rank all-reduce ran
    assert condition(job, "Succeeded")["reason"] == "AllPodsSucceeded"
    settle(2)  # a second reconcile on a lagging cache would post the transition's event again by now
    events = cluster.api("GET", f"/api/v1/namespaces/{cluster.namespace}/events").json()["items"]
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == "ok"]
    assert reasons.count("AllPodsSucceeded") == 1 and reasons.count("GangCreated") == 1, reasons
    ours = [e for e in events if e["involvedObject"]["kind"] == "SAETrainingJob"]
    assert {(e["reportingComponent"], e["source"]["component"]) for e in ours} == {("interp-operator",) * 2}
    assert {e["action"] for e in ours if e["reason"] == "GangCreated"} == {"CreatePods"}
    decisions = [json.loads(line) for line in operator.log.read_text().splitlines()
                 if '"interp_operator.decisions"' in line]
    logged = [(d["event"], d["level"]) for d in decisions
              if (d.get("job"), d.get("namespace")) == ("ok", cluster.namespace)]
    assert ("GangCreated", "info") in logged and ("AllPodsSucceeded", "info") in logged, logged


def test_one_killed_pod_restarts_the_whole_gang_which_resumes(cluster):
    cluster.create(probe_job("restart", replicas=2, steps=8, step_seconds=0.5))
    wait_for(lambda: cluster.job("restart").get("status", {}).get("phase") == "Running", timeout=60, interval=0.2)
    wait_for(lambda: cluster.checkpoint("restart").get("step", 0) >= 2, timeout=30, interval=0.2)
    cluster.kill("restart-1-1")
    job = cluster.wait_phase("restart", "Succeeded", timeout=120)
    assert (job["status"]["restarts"], job["status"]["attempt"]) == (1, 2)
    checkpoint = cluster.checkpoint("restart")
    assert checkpoint["step"] == 8 and checkpoint["worldSizes"] == [2, 2]
    # the killed pod stays for its logs (cleanPodPolicy Running keeps the exited pods of the attempt before)
    assert {p["metadata"]["name"] for p in cluster.pods("restart")} == {"restart-1-1", "restart-2-0", "restart-2-1"}


def test_backoff_limit_fails_the_job(cluster):
    cluster.create(probe_job("limit", replicas=1, steps=100, step_seconds=0.5, restartPolicy={"backoffLimit": 0}))
    wait_for(lambda: cluster.job("limit").get("status", {}).get("phase") == "Running", timeout=60, interval=0.2)
    cluster.kill("limit-1-0")
    job = cluster.wait_phase("limit", "Failed", timeout=60)
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
    wait_for(lambda: not [p for p in cluster.pods("limit") if p["status"].get("phase") == "Running"], timeout=30)


def test_gang_that_does_not_fit_stays_pending_without_pods(cluster):
    cluster.create(probe_job("big", replicas=3, gpus=1))  # one rack holds two
    job = wait_for(lambda: (j := cluster.job("big")).get("status", {}).get("conditions") and j, timeout=30)
    settle(2)
    job = cluster.job("big")
    placed = condition(job, "PodsPlaced")
    assert job["status"]["phase"] == "Pending" and placed["status"] == "False"
    assert "room for 2" in placed["message"]
    assert cluster.pods("big") == []


def test_lost_node_replaces_the_gang_in_another_rack(cluster):
    cluster.create(probe_job("moved", replicas=2, steps=200, step_seconds=0.3))
    job = wait_for(lambda: (j := cluster.job("moved")).get("status", {}).get("phase") == "Running" and j,
                   timeout=60, interval=0.2)
    first_nodes = job["status"]["placement"]["nodes"]
    cluster.node(first_nodes[0], ready=False)
    try:
        job = wait_for(lambda: (j := cluster.job("moved"))["status"].get("attempt", 0) >= 2
                       and j["status"]["phase"] == "Running" and j, timeout=90, interval=0.2)
        assert set(job["status"]["placement"]["nodes"]).isdisjoint({first_nodes[0]})
        assert job["status"]["restarts"] == 1
    finally:
        cluster.node(first_nodes[0], ready=True)
    cluster.patch_job("moved", {"spec": {"runPolicy": {"suspend": True}}})
    cluster.wait_phase("moved", "Suspended")


def test_suspend_removes_pods_and_resume_continues(cluster):
    cluster.create(probe_job("pause", replicas=2, steps=30, step_seconds=0.3))
    wait_for(lambda: cluster.checkpoint("pause").get("step", 0) >= 2, timeout=60, interval=0.2)
    cluster.patch_job("pause", {"spec": {"runPolicy": {"suspend": True}}})
    cluster.wait_phase("pause", "Suspended")
    wait_for(lambda: cluster.pods("pause") == [], timeout=30, interval=0.2)
    cluster.patch_job("pause", {"spec": {"runPolicy": {"suspend": False}}})
    job = cluster.wait_phase("pause", "Succeeded", timeout=120)
    assert job["status"]["restarts"] == 0 and job["status"]["attempt"] == 2
    checkpoint = cluster.checkpoint("pause")
    assert checkpoint["worldSizes"] == [2, 2] and checkpoint["step"] == 30


def test_elastic_gang_starts_small_and_grows_at_the_next_restart(cluster):
    cordoned = ["gang-1b", "gang-2a", "gang-2b"]
    for node in cordoned:
        cluster.node(node, ready=False)
    try:
        cluster.create(probe_job("elastic", replicas=2, steps=60, step_seconds=0.3,
                                 gang={"minReplicas": 1, "maxReplicas": 2}))
        job = wait_for(lambda: (j := cluster.job("elastic")).get("status", {}).get("phase") == "Running" and j,
                       timeout=60, interval=0.2)
        assert job["status"]["worldSize"] == 1
    finally:
        for node in cordoned:
            cluster.node(node, ready=True)
    wait_for(lambda: cluster.checkpoint("elastic").get("step", 0) >= 2, timeout=30, interval=0.2)
    cluster.kill("elastic-1-0")
    job = wait_for(lambda: (j := cluster.job("elastic"))["status"].get("attempt", 0) >= 2
                   and j["status"].get("worldSize") == 2 and j, timeout=90, interval=0.2)
    cluster.wait_phase("elastic", "Succeeded", timeout=120)
    assert cluster.checkpoint("elastic")["worldSizes"] == [1, 2]


def test_operator_killed_and_restarted_leaves_no_duplicate_or_orphan(cluster, operator):
    operator.kill()
    try:
        cluster.create(probe_job("crash", replicas=2, steps=3))
        settle(1)
        assert cluster.pods("crash") == []  # nobody reconciles while the operator is down
    finally:
        operator.start()
    job = cluster.wait_phase("crash", "Succeeded", timeout=90)
    assert job["status"]["attempt"] == 1
    names = [p["metadata"]["name"] for p in cluster.pods("crash")]
    assert names == ["crash-1-0", "crash-1-1"]


def test_deleting_the_job_deletes_its_pods(cluster):
    cluster.create(probe_job("gone", replicas=2, steps=200, step_seconds=0.3))
    wait_for(lambda: len(cluster.pods("gone")) == 2, timeout=60, interval=0.2)
    response = cluster.api("DELETE", f"/apis/interp.dev/v1alpha1/namespaces/{cluster.namespace}/saetrainingjobs/gone")
    assert response.status_code in (200, 202)
    wait_for(lambda: cluster.pods("gone") == [], timeout=60, interval=0.2)


def test_finished_pods_kept_for_their_logs_hold_no_capacity(cluster):
    anywhere = {"topology": {"keys": ["topology.kubernetes.io/rack"], "mode": "Preferred"}}
    cluster.create(probe_job("first", replicas=4, steps=1, step_seconds=0, scheduling=anywhere))
    cluster.wait_phase("first", "Succeeded")
    assert {p["status"]["phase"] for p in cluster.pods("first")} == {"Succeeded"}  # still there, on every GPU
    cluster.create(probe_job("second", replicas=4, steps=1, step_seconds=0, scheduling=anywhere))
    job = cluster.wait_phase("second", "Succeeded", timeout=60)
    assert job["status"]["restarts"] == 0
