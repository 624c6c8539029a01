"""The reconcile loop lays its own writes over watch caches that have not caught up (one failure counted once)."""

from __future__ import annotations

from interp_operator.gang.pods import PodState
from interp_operator.handlers import OwnWrites


def test_a_status_is_laid_over_bodies_whose_status_this_loop_has_replaced():
    own = OwnWrites()
    stale = {"metadata": {"resourceVersion": "7"}, "status": {"restarts": 0}}
    own.remember(stale, {"restarts": 1}, ())
    assert own.body(stale)["status"] == {"restarts": 1}
    fresh = {"metadata": {"resourceVersion": "8"}, "status": {"restarts": 1}}
    assert own.body(fresh)["status"] == {"restarts": 1}
    assert stale["status"] == {"restarts": 0}  # the watch's body itself is not touched


def test_an_intermediate_body_of_an_earlier_own_write_is_stale_too():
    """Write S1 from body 7, write S2 (Succeeded, event posted) from body 7 with S1 laid over it; then body 8 (S1)
    arrives: without the overlay the next reconcile would see Running again and post the transition's event twice."""
    own = OwnWrites()
    first = {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Pending"}}
    running, done = {"phase": "Running"}, {"phase": "Succeeded"}
    own.remember(own.body(first), running, ())
    own.remember(own.body(first), done, ())
    assert own.body({"metadata": {"resourceVersion": "8"}, "status": running})["status"] == done
    assert own.body({"metadata": {"resourceVersion": "9"}, "status": done})["status"] == done


def test_a_deleted_pod_counts_as_deleting_until_the_index_shows_it():
    own = OwnWrites()
    failed = PodState("job-1-1", 1, 1, "Failed", exit_code=1)
    own.remember({"metadata": {}}, None, ["job-1-1"])
    assert own.pods([failed]) == (PodState("job-1-1", 1, 1, "Failed", exit_code=1, deleting=True),)
    assert own.pods([]) == ()  # gone: forgotten, so a replacement of the same name is live
    replacement = PodState("job-1-1", 1, 1, "Running")
    assert own.pods([replacement]) == (replacement,)
