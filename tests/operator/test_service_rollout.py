"""Independent replicas (InterpInferenceService): the rollout step table-driven, a simulated cluster that checks the
maxSurge / maxUnavailable bounds at every step of whole rollouts, and the lifecycle around it (a failed replica
replaced alone after its backoff, a permanent failure, a retry once the spec changed, status and events)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from interp_operator.api.common import RestartPolicy
from interp_operator.gang.lifecycle import Observed, Policy, decide
from interp_operator.gang.pods import PodState
from interp_operator.gang.rollout import Rollout, step

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NEW, OLD = "new", "old"


def pod(rank: int, revision: str = OLD, ready: bool = True, **fields) -> PodState:
    phase = fields.pop("phase", "Running")
    return PodState(f"svc-1-{rank}", 1, rank, phase, ready=ready, node=f"n{rank}", revision=revision, **fields)


@pytest.mark.parametrize(("surge", "unavailable", "replicas", "expected"), [
    (0, 1, 4, (0, 1)),
    ("25%", "25%", 4, (1, 1)),
    ("10%", "10%", 4, (1, 0)),        # a surge rounds up, unavailability down
    ("0%", "10%", 4, (0, 1)),         # both 0: one may be unavailable, or nothing could move
    (0, "100%", 3, (0, 3)),
    ("50%", 0, 3, (2, 0)),
])
def test_bounds_resolve_like_a_deployments(surge, unavailable, replicas, expected):
    rollout = Rollout.resolve(NEW, replicas, surge, unavailable)
    assert (rollout.max_surge, rollout.max_unavailable) == expected


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "pods", "create", "delete"), [
    # maxSurge 0: one old ready pod goes; its replacement waits until it is gone (its GPU is free).
    (2, 0, 1, [pod(0), pod(1)], 0, ["svc-1-0"]),
    (2, 0, 1, [pod(0, deleting=True), pod(1)], 0, []),
    (2, 0, 1, [pod(1)], 1, []),
    # ...the next old pod waits for the new one to be ready.
    (2, 0, 1, [pod(1), pod(2, NEW, ready=False)], 0, []),
    (2, 0, 1, [pod(1), pod(2, NEW)], 0, ["svc-1-1"]),
    # maxUnavailable 0: surge first, delete once the new pod is ready.
    (1, 1, 0, [pod(0)], 1, []),
    (1, 1, 0, [pod(0), pod(1, NEW, ready=False)], 0, []),
    (1, 1, 0, [pod(0), pod(1, NEW)], 0, ["svc-1-0"]),
    # Unready old pods cost no availability: they go at once, whatever maxUnavailable says.
    (2, 1, 0, [pod(0, ready=False), pod(1, ready=False)], 1, ["svc-1-0", "svc-1-1"]),
    # Scaling up and down at one revision: unready pods, then the youngest, go first.
    (3, 0, 1, [pod(0, NEW)], 2, []),
    (1, 0, 1, [pod(0, NEW), pod(1, NEW, ready=False), pod(2, NEW)], 0, ["svc-1-1", "svc-1-2"]),
    (0, 0, 1, [pod(0, NEW), pod(1, NEW)], 0, ["svc-1-1", "svc-1-0"]),
    # A failed pod holds nothing: the lifecycle replaces it, the step counts it as gone.
    (2, 0, 1, [pod(0, NEW, ready=False, phase="Failed"), pod(1, NEW)], 1, []),
    # Steady state: nothing to do.
    (2, 0, 1, [pod(0, NEW), pod(1, NEW)], 0, []),
])
def test_rollout_step(replicas, surge, unavailable, pods, create, delete):
    planned = step(Rollout.resolve(NEW, replicas, surge, unavailable), pods)
    assert (planned.create, list(planned.delete)) == (create, delete)


class Simulation:
    """A cluster that runs the step each tick: created pods become ready after ``start`` ticks, deleted ones vanish
    after ``grace`` ticks (holding their GPU until then)."""

    def __init__(self, replicas: int, start: int = 2, grace: int = 2) -> None:
        self.pods: dict[int, dict] = {r: {"revision": OLD, "age": start, "gone_in": None} for r in range(replicas)}
        self.start, self.grace, self.next_rank = start, grace, replicas

    def states(self) -> list[PodState]:
        return [pod(r, p["revision"], ready=p["age"] >= self.start and p["gone_in"] is None,
                    deleting=p["gone_in"] is not None) for r, p in self.pods.items()]

    def tick(self, rollout: Rollout) -> None:
        planned = step(rollout, self.states())
        for name in planned.delete:
            self.pods[int(name.rsplit("-", 1)[1])]["gone_in"] = self.grace
        for _ in range(planned.create):
            self.pods[self.next_rank] = {"revision": rollout.revision, "age": 0, "gone_in": None}
            self.next_rank += 1
        for rank, p in list(self.pods.items()):
            p["age"] += 1
            if p["gone_in"] is not None:
                p["gone_in"] -= 1
                if p["gone_in"] < 0:
                    del self.pods[rank]


@pytest.mark.parametrize(("replicas", "surge", "unavailable"), [
    (1, 0, 1), (2, 0, 1), (4, 0, 1), (4, 0, 2), (3, 1, 0), (4, 2, 1), (5, "25%", "25%"), (4, 0, "100%"),
])
def test_whole_rollouts_stay_within_their_bounds(replicas, surge, unavailable):
    rollout = Rollout.resolve(NEW, replicas, surge, unavailable)
    cluster = Simulation(replicas)
    for ticks in range(200):
        states = cluster.states()
        holding = len(states)  # terminating pods still hold their GPU
        ready = sum(s.ready for s in states)
        assert holding <= replicas + rollout.max_surge, f"tick {ticks}: {holding} pods hold GPUs"
        assert ready >= replicas - rollout.max_unavailable, f"tick {ticks}: only {ready} ready"
        if all(s.revision == NEW and s.ready for s in states) and len(states) == replicas:
            break
        cluster.tick(rollout)
    else:
        pytest.fail(f"the rollout did not finish: {cluster.states()}")


# -- the lifecycle around the step -------------------------------------------------------------------------------
def service_policy(replicas: int = 2, surge: int | str = 0, unavailable: int | str = 1, **restart) -> Policy:
    return Policy(completes=False, size=replicas, min_size=replicas, max_size=replicas, processes_per_pod=1,
                  restart=RestartPolicy.model_validate({"scope": "Pod", "backoffBaseSeconds": 10,
                                                        "permanentExitCodes": [3]} | restart),
                  builtin_scheduler=False, rollout=Rollout.resolve(NEW, replicas, surge, unavailable))


def run(policy: Policy, pods: list[PodState], status: dict | None = None, seconds: float = 0, generation: int = 3):
    observed = Observed(status or {}, generation, tuple(pods), frozenset(f"n{i}" for i in range(8)),
                        T0 + timedelta(seconds=seconds))
    return decide(policy, observed, lambda low, high: pytest.fail("replicas are not placed as a gang"))


def cond(decision, type_: str) -> dict:
    return next(c for c in decision.status["conditions"] if c["type"] == type_)


def test_a_new_service_creates_its_replicas_unpinned():
    d = run(service_policy(3), [])
    assert (d.create.attempt, d.create.ranks, d.create.nodes, d.create.size) == (1, (0, 1, 2), (), 3)
    assert d.status["phase"] == "Pending" and cond(d, "Progressing")["reason"] == "Scaling"


def test_status_counts_and_a_finished_rollout():
    d = run(service_policy(2), [pod(0, NEW), pod(1, NEW)], {"attempt": 1})
    assert (d.status["replicas"], d.status["readyReplicas"], d.status["updatedReplicas"]) == (2, 2, 2)
    assert d.status["phase"] == "Running" and d.create is None and d.delete == []
    assert (cond(d, "Progressing")["status"], cond(d, "Progressing")["reason"]) == ("False", "Complete")


def test_a_rolling_update_is_announced_once_and_its_end_too():
    steady = run(service_policy(2), [pod(0, NEW), pod(1, NEW)], {"attempt": 1}).status
    started = run(service_policy(2), [pod(0), pod(1)], steady)
    assert started.delete == ["svc-1-0"] and [e.reason for e in started.events] == ["RollingUpdate"]
    assert cond(started, "Progressing")["reason"] == "RollingUpdate"
    later = run(service_policy(2), [pod(1), pod(2, NEW, ready=False)], started.status, seconds=5)
    assert later.events == [] and cond(later, "Progressing")["reason"] == "RollingUpdate"
    done = run(service_policy(2), [pod(2, NEW), pod(3, NEW)], later.status, seconds=30)
    assert [e.reason for e in done.events] == ["RolloutComplete"]
    assert (done.status["updatedReplicas"], cond(done, "Progressing")["reason"]) == (2, "Complete")


def test_new_replicas_take_fresh_ranks_above_every_pod_seen():
    d = run(service_policy(2), [pod(4, NEW), pod(7, NEW, deleting=True)], {"attempt": 1})
    assert d.create is None, "the deleted pod still counts with maxSurge 0"
    d = run(service_policy(3, surge=1), [pod(4, NEW), pod(7, NEW, deleting=True)], {"attempt": 1})
    assert d.create.ranks == (8, 9)


def test_a_replica_on_a_lost_node_is_replaced_without_waiting_for_its_deletion():
    lost = pod(1, NEW, ready=False)
    observed = Observed({"attempt": 1}, 3, (pod(0, NEW), lost), frozenset({"n0"}), T0)
    d = decide(service_policy(2), observed, lambda low, high: pytest.fail("not placed as a gang"))
    assert d.delete == ["svc-1-1"] and "lost its node n1" in cond(d, "Restarting")["message"]
    stuck = dataclasses.replace(lost, deleting=True)  # the node is gone: the deletion is never confirmed
    observed = Observed(d.status, 3, (pod(0, NEW), stuck), frozenset({"n0"}), T0 + timedelta(seconds=10))
    replaced = decide(service_policy(2), observed, lambda low, high: pytest.fail("not placed as a gang"))
    assert replaced.create.ranks == (2,)


def test_a_failed_replica_is_replaced_alone_after_its_backoff():
    failed = pod(1, NEW, ready=False, phase="Failed", exit_code=1)
    d = run(service_policy(2), [pod(0, NEW), failed], {"attempt": 1})
    assert d.delete == ["svc-1-1"] and d.create is None and d.status["restarts"] == 1
    assert cond(d, "Restarting")["status"] == "True"
    assert [e.reason for e in d.events] == ["PodRestarting"]
    waiting = run(service_policy(2), [pod(0, NEW)], d.status, seconds=5)
    assert waiting.create is None and waiting.requeue_after == pytest.approx(5)
    replaced = run(service_policy(2), [pod(0, NEW)], d.status, seconds=10)
    assert replaced.create.ranks == (1,) and replaced.delete == []
    assert cond(replaced, "Restarting")["status"] == "False"


def test_a_replica_that_cannot_load_fails_the_service_with_its_reason():
    said = '{"error": "SAELoadFailed", "message": "SAE: width 16 does not match resid_post.1 (32)"}'
    bad = pod(0, NEW, ready=False, phase="Failed", exit_code=3, message=said)
    d = run(service_policy(1), [bad], {"attempt": 1})
    assert d.status["phase"] == "Failed" and d.status["restarts"] == 0
    assert cond(d, "Failed")["reason"] == "PermanentFailure" and "width 16" in cond(d, "Failed")["message"]
    again = run(service_policy(1), [bad], d.status, seconds=60)
    assert again.create is None and again.status["phase"] == "Failed", "no crash loop"
    # A changed spec (a later generation) tries again.
    fixed = run(service_policy(1), [], d.status, seconds=90, generation=4)
    assert fixed.create is not None and fixed.status["phase"] == "Pending"
    assert cond(fixed, "Failed")["status"] == "False" and "SpecChanged" in [e.reason for e in fixed.events]
