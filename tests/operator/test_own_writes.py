"""The reconcile loop lays its own writes over watch caches that have not caught up (one failure counted once)."""

from __future__ import annotations

from interp_operator.gang.pods import PodState
from interp_operator.handlers import OwnWrites


def test_a_status_is_laid_over_the_body_it_was_computed_from_only():
    own = OwnWrites()
    stale = {"metadata": {"resourceVersion": "7"}, "status": {"restarts": 0}}
    own.remember(stale, {"restarts": 1}, ())
    assert own.body(stale)["status"] == {"restarts": 1}
    fresh = {"metadata": {"resourceVersion": "8"}, "status": {"restarts": 1, "phase": "Running"}}
    assert own.body(fresh)["status"] == {"restarts": 1, "phase": "Running"}
    assert stale["status"] == {"restarts": 0}  # the watch's body itself is not touched


def test_a_deleted_pod_counts_as_deleting_until_the_index_shows_it():
    own = OwnWrites()
    failed = PodState("job-1-1", 1, 1, "Failed", exit_code=1)
    own.remember({"metadata": {}}, None, ["job-1-1"])
    assert own.pods([failed]) == (PodState("job-1-1", 1, 1, "Failed", exit_code=1, deleting=True),)
    assert own.pods([]) == ()  # gone: forgotten, so a replacement of the same name is live
    replacement = PodState("job-1-1", 1, 1, "Running")
    assert own.pods([replacement]) == (replacement,)
