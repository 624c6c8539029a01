"""Objects outlive the operator cleanly: no finalizer holds them once it is gone (after `helm uninstall`), their pods go
with them through owner references, and the finalizer earlier versions left is removed when the operator starts."""

from __future__ import annotations

import json

from gang_cluster import probe_job

from interp_operator.local.testing import wait_for

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
"""What earlier versions of the operator left on every object (kopf's default finalizer, added for daemons)."""
JOBS = "/apis/interp.dev/v1alpha1/namespaces/{ns}/saetrainingjobs"


def _gone(cluster, name: str) -> bool:
    return cluster.api("GET", f"{JOBS.format(ns=cluster.namespace)}/{name}").status_code == 404


def _delete(cluster, name: str) -> None:
    response = cluster.api("DELETE", f"{JOBS.format(ns=cluster.namespace)}/{name}")
    assert response.status_code in (200, 202), response.text


def test_an_object_is_deleted_with_its_pods_while_no_operator_runs(cluster, operator):
    cluster.create(probe_job("orphaned", replicas=2, steps=500, step_seconds=0.2))
    running = cluster.wait_phase("orphaned", "Running", timeout=60)
    assert not running["metadata"].get("finalizers"), running["metadata"]
    pods = cluster.pods("orphaned")
    assert len(pods) == 2 and all(p["metadata"]["ownerReferences"][0]["uid"] == running["metadata"]["uid"]
                                  for p in pods)
    operator.stop()
    try:
        _delete(cluster, "orphaned")
        wait_for(lambda: _gone(cluster, "orphaned"), timeout=5, interval=0.1,
                 message=f"deletion is held: {cluster.job('orphaned')['metadata']}")
        # interp-local's garbage collector removes what the object owned, as kube-controller-manager does.
        wait_for(lambda: not cluster.pods("orphaned"), timeout=20, interval=0.2,
                 message=f"pods left behind: {[p['metadata']['name'] for p in cluster.pods('orphaned')]}")
    finally:
        operator.start()


def test_the_operator_removes_the_finalizer_earlier_versions_left(cluster, operator):
    """Objects of an upgrade: one that runs on, and one deleted while no operator ran (stuck Terminating)."""
    operator.stop()
    try:
        for name in ("inherited", "stuck"):
            job = probe_job(name, replicas=1)
            job["metadata"]["finalizers"] = [KOPF_FINALIZER]
            cluster.create(job)
        _delete(cluster, "stuck")
        stuck = cluster.job("stuck")
        assert stuck["metadata"].get("deletionTimestamp") and stuck["metadata"]["finalizers"] == [KOPF_FINALIZER]
    finally:
        operator.start()
    wait_for(lambda: _gone(cluster, "stuck"), timeout=60, interval=0.2,
             message=f"the stuck object was never released: {cluster.job('stuck')['metadata']}")
    wait_for(lambda: not cluster.job("inherited")["metadata"].get("finalizers"), timeout=30, interval=0.2,
             message=f"the finalizer stayed: {cluster.job('inherited')['metadata']}")
    cluster.wait_phase("inherited", "Running", "Succeeded", timeout=60)  # and it is still reconciled


def test_a_deleted_objects_loop_stops_and_a_new_object_of_its_name_starts_afresh(cluster, operator):
    cluster.create(probe_job("reborn", replicas=1, steps=500, step_seconds=0.2))
    first = cluster.wait_phase("reborn", "Running", timeout=60)
    _delete(cluster, "reborn")
    wait_for(lambda: _gone(cluster, "reborn"), timeout=5, interval=0.1, message="deletion is held")
    cluster.create(probe_job("reborn", replicas=1, steps=500, step_seconds=0.2))
    second = cluster.wait_phase("reborn", "Running", timeout=60)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert (second["status"]["attempt"], second["status"]["restarts"]) == (1, 0), second["status"]
    wait_for(lambda: [p["metadata"]["ownerReferences"][0]["uid"] for p in cluster.pods("reborn")]
             == [second["metadata"]["uid"]], timeout=20, interval=0.2,
             message=f"pods of the deleted object: {cluster.pods('reborn')}")
    stopped = [json.loads(line) for line in operator.log.read_text().splitlines()
               if "its reconcile loop stops" in line and '"reborn"' in line]
    assert [(r["job"], r["namespace"]) for r in stopped] == [("reborn", cluster.namespace)]
