"""The gang lifecycle decision, table-driven: creation, running, failures, backoff, limits, suspend, deadline, TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from interp_operator.api.common import RestartPolicy, RunPolicy
from interp_operator.gang.lifecycle import Observed, Policy, decide
from interp_operator.gang.placement import Placement, Unplaceable
from interp_operator.gang.pods import PodState
from interp_operator.gang.rollout import Rollout

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def ts(seconds: float = 0) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scenario:
    """Chainable builder: a policy, the stored status, the observed pods and nodes, the time, the placement."""

    def __init__(self, size: int = 2, **policy) -> None:
        restart = policy.pop("restart", {})
        run = policy.pop("run", {})
        self.policy = Policy(completes=policy.pop("completes", True), size=size, min_size=policy.pop("min_size", size),
                             max_size=policy.pop("max_size", size), processes_per_pod=policy.pop("procs", 1),
                             restart=RestartPolicy.model_validate(restart), run=RunPolicy.model_validate(run),
                             **policy)
        self.stored: dict = {}
        self.pods: list[PodState] = []
        self.nodes = {"n0", "n1", "n2", "n3"}
        self.now = T0
        self.placement: Placement | Unplaceable = Placement(size, tuple(f"n{i}" for i in range(size)))
        self.plan_calls: list[tuple[int, int]] = []

    def status(self, **fields) -> Scenario:
        self.stored.update(fields)
        return self

    def gang(self, attempt: int = 1, phase: str = "Running", ranks=None, pods=None) -> Scenario:
        """Pods of one attempt; ``pods`` overrides fields per rank, e.g. {1: {"phase": "Failed"}}."""
        for rank in ranks if ranks is not None else range(self.policy.size):
            fields = {"phase": phase, "ready": phase == "Running", "node": f"n{rank}"} | (pods or {}).get(rank, {})
            self.pods.append(PodState(f"job-{attempt}-{rank}", attempt, rank, **fields))
        return self

    def running(self, attempt: int = 1, restarts: int = 0, **gang) -> Scenario:
        nodes = [f"n{i}" for i in range(self.policy.size)]
        self.status(phase="Running", attempt=attempt, restarts=restarts, replicas=self.policy.size,
                    placement={"nodes": nodes}, startTime=ts())
        return self.gang(attempt, **gang)

    def node_down(self, name: str) -> Scenario:
        self.nodes.discard(name)
        return self

    def at(self, seconds: float) -> Scenario:
        self.now = T0 + timedelta(seconds=seconds)
        return self

    def unplaceable(self) -> Scenario:
        self.placement = Unplaceable("InsufficientCapacity", "a gang of 2 pods does not fit now")
        return self

    def placed(self, size: int, key=None, domain=None) -> Scenario:
        self.placement = Placement(size, tuple(f"n{i}" for i in range(size)), key, domain)
        return self

    def decide(self):
        def plan(lo: int, hi: int):
            self.plan_calls.append((lo, hi))
            return self.placement

        observed = Observed(self.stored, 3, tuple(self.pods), frozenset(self.nodes), self.now)
        return decide(self.policy, observed, plan)


def condition(decision, type_: str) -> dict:
    return next(c for c in decision.status["conditions"] if c["type"] == type_)


def test_first_reconcile_creates_the_whole_gang():
    d = Scenario(3).placed(3, "rack", "r1").decide()
    assert (d.create.attempt, d.create.ranks, d.create.nodes) == (1, (0, 1, 2), ("n0", "n1", "n2"))
    assert d.status["placement"] == {"topologyKey": "rack", "domain": "r1", "nodes": ["n0", "n1", "n2"]}
    assert (d.status["phase"], d.status["attempt"], d.status["worldSize"]) == ("Pending", 1, 3)
    assert condition(d, "PodsPlaced")["status"] == "True"
    assert d.status["observedGeneration"] == 3 and d.status["startTime"] == ts()
    assert [(e.type, e.reason, e.message) for e in d.events] == [
        ("Normal", "GangCreated", "attempt 1: 3 pods in rack=r1")]


def test_elastic_size_comes_from_placement():
    s = Scenario(4, min_size=2, max_size=8, procs=8).placed(3)
    d = s.decide()
    assert s.plan_calls == [(2, 8)] and d.create.size == 3 and d.status["worldSize"] == 24


def test_unplaceable_gang_stays_pending_with_a_reason_and_no_pods():
    d = Scenario().unplaceable().decide()
    assert d.create is None and d.status["phase"] == "Pending" and d.requeue_after == 15
    placed = condition(d, "PodsPlaced")
    assert (placed["status"], placed["reason"]) == ("False", "InsufficientCapacity")
    # The first reconcile of a new object (already "Pending" from admission) announces the wait...
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "InsufficientCapacity")]
    again = Scenario().unplaceable().status(**d.status).at(15).decide()
    assert again.events == [] and condition(again, "PodsPlaced")["status"] == "False"  # ...once, no event spam


def test_a_restarting_gang_that_no_longer_fits_says_so_once():
    restarting = [{"type": "Restarting", "status": "True", "reason": "PodFailed", "message": "",
                   "lastTransitionTime": ts()}]
    d = Scenario().unplaceable().status(phase="Restarting", attempt=1, restarts=1, conditions=restarting).at(100)
    d = d.decide()
    assert d.status["phase"] == "Restarting" and [e.reason for e in d.events] == ["InsufficientCapacity"]


def test_all_pods_running_means_running():
    d = Scenario().status(phase="Pending", attempt=1, replicas=0, placement={"nodes": ["n0", "n1"]}).gang().decide()
    assert (d.status["phase"], d.status["replicas"], d.status["readyReplicas"]) == ("Running", 2, 2)
    assert [e.reason for e in d.events] == ["GangRunning"] and d.create is None


def test_crash_in_the_middle_of_creation_completes_the_gang():
    s = Scenario(4).status(phase="Pending", attempt=1, replicas=0, placement={"nodes": ["n0", "n1", "n2", "n3"]})
    d = s.gang(phase="Pending", ranks=[0, 1]).decide()
    assert (d.create.attempt, d.create.ranks, d.create.nodes) == (1, (2, 3), ("n0", "n1", "n2", "n3"))
    assert d.status["restarts"] == 0 and d.delete == []


@pytest.mark.parametrize(("pods", "nodes_down", "message"), [
    ({1: {"phase": "Failed", "exit_code": 1}}, (), "pod job-1-1 failed (exit code 1)"),
    ({0: {"phase": "Failed", "reason": "Evicted"}}, (), "pod job-1-0 failed (Evicted)"),
    ({}, ("n1",), "pod job-1-1 lost its node n1"),
    ({0: {"deleting": True}}, (), "pod job-1-0 was deleted"),
])
def test_any_failure_restarts_the_whole_gang(pods, nodes_down, message):
    s = Scenario().running(pods=pods)
    for node in nodes_down:
        s.node_down(node)
    d = s.decide()
    assert (d.status["phase"], d.status["restarts"]) == ("Restarting", 1)
    assert condition(d, "Restarting")["message"] == message
    # cleanPodPolicy Running (the default): the exited pod stays for inspection, the live ones go.
    assert set(d.delete) == {p.name for p in s.pods if not p.deleting and not p.finished}
    assert d.events[0].type == "Warning" and d.create is None


def test_a_vanished_pod_is_a_failure_once_the_gang_was_complete():
    d = Scenario().running(ranks=[0]).decide()
    assert d.status["phase"] == "Restarting"
    assert condition(d, "Restarting")["message"] == "pod of rank 1 disappeared"


def test_restarting_waits_for_old_pods_to_go():
    d = Scenario().status(phase="Restarting", attempt=1, restarts=1).gang(1).decide()
    assert d.create is None and d.requeue_after == 2


@pytest.mark.parametrize(("restarts", "elapsed", "creates", "wait"), [
    (1, 5, False, 5), (1, 10, True, None), (3, 39, False, 1), (3, 40, True, None), (9, 599, False, 1),
])
def test_exponential_backoff_between_attempts(restarts, elapsed, creates, wait):
    s = Scenario(restart={"backoffBaseSeconds": 10, "backoffMaxSeconds": 600, "backoffLimit": 20})
    s.status(phase="Restarting", attempt=2, restarts=restarts,
             conditions=[{"type": "Restarting", "status": "True", "reason": "PodFailed", "message": "",
                          "lastTransitionTime": ts()}])
    d = s.at(elapsed).decide()
    assert (d.create is not None) == creates
    if creates:
        assert d.create.attempt == 3 and d.status["attempt"] == 3
    else:
        assert d.requeue_after == pytest.approx(wait)


def test_permanent_exit_code_fails_at_once():
    d = Scenario().running(pods={0: {"phase": "Failed", "exit_code": 3}}).decide()
    assert (d.status["phase"], condition(d, "Failed")["reason"]) == ("Failed", "PermanentFailure")
    assert d.status["restarts"] == 0 and "job-1-1" in d.delete


def test_backoff_limit_fails_the_job():
    d = Scenario(restart={"backoffLimit": 2}).running(restarts=2, pods={1: {"phase": "Failed", "exit_code": 1}})
    d = d.decide()
    assert (d.status["phase"], condition(d, "Failed")["reason"]) == ("Failed", "BackoffLimitExceeded")
    assert "backoffLimit 2 reached" in condition(d, "Failed")["message"]


def test_all_succeeded_completes_a_job_but_not_a_service():
    done = Scenario().running(phase="Succeeded").decide()
    assert done.status["phase"] == "Succeeded" and done.status["completionTime"] == ts()
    service = Scenario(completes=False).running(phase="Succeeded").decide()
    assert service.status["phase"] != "Succeeded"


def test_suspend_deletes_pods_and_resume_starts_a_new_attempt():
    suspended = Scenario(run={"suspend": True}).running().decide()
    assert suspended.status["phase"] == "Suspended" and sorted(suspended.delete) == ["job-1-0", "job-1-1"]
    resumed = Scenario().status(**suspended.status).decide()
    assert resumed.status["phase"] == "Pending" and resumed.create.attempt == 2
    assert condition(resumed, "Suspended")["status"] == "False" and resumed.status["restarts"] == 0


def test_active_deadline_fails_the_run():
    d = Scenario(run={"activeDeadlineSeconds": 60}).running().at(61).decide()
    assert (d.status["phase"], condition(d, "Failed")["reason"]) == ("Failed", "DeadlineExceeded")
    assert sorted(d.delete) == ["job-1-0", "job-1-1"]


@pytest.mark.parametrize(("elapsed", "deleted", "requeue"), [(30, False, 30), (60, True, None)])
def test_ttl_after_finished(elapsed, deleted, requeue):
    s = Scenario(run={"ttlSecondsAfterFinished": 60}).status(phase="Succeeded", attempt=1, completionTime=ts())
    d = s.at(elapsed).decide()
    assert d.delete_object == deleted and d.requeue_after == requeue


def test_pod_scope_restarts_only_the_failed_pod_once():
    s = Scenario(restart={"scope": "Pod"}).running(pods={1: {"phase": "Failed", "exit_code": 1}})
    first = s.decide()
    assert (first.delete, first.status["restarts"], first.status["phase"]) == (["job-1-1"], 1, "Running")
    deleting = Scenario(restart={"scope": "Pod"}).running(
        restarts=1, pods={1: {"phase": "Failed", "exit_code": 1, "deleting": True}}).decide()
    assert deleting.status["restarts"] == 1 and deleting.create is None
    gone = Scenario(restart={"scope": "Pod"}).running(restarts=1, ranks=[0]).node_down("n1").decide()
    assert (gone.create.ranks, gone.create.nodes) == ((1,), ("n0", ""))


def test_pods_of_older_attempts_are_deleted():
    d = Scenario().running(attempt=2).gang(attempt=1).decide()
    assert sorted(d.delete) == ["job-1-0", "job-1-1"] and d.status["phase"] == "Running"


def test_success_keeps_the_pods_for_their_logs():
    d = Scenario().running(phase="Succeeded").decide()
    assert d.status["phase"] == "Succeeded" and d.delete == []


def test_pods_stuck_terminating_on_a_lost_node_do_not_block_the_next_attempt():
    restarting = [{"type": "Restarting", "status": "True", "reason": "PodFailed", "message": "",
                   "lastTransitionTime": ts()}]
    stuck = Scenario().status(phase="Restarting", attempt=1, restarts=1, conditions=restarting)
    stuck.gang(1, pods={0: {"deleting": True}, 1: {"deleting": True}})
    assert stuck.node_down("n0").node_down("n1").at(100).decide().create.attempt == 2
    graceful = Scenario().status(phase="Restarting", attempt=1, restarts=1, conditions=restarting)
    graceful.gang(1, pods={0: {"deleting": True}})
    assert graceful.at(100).decide().create is None  # a pod on a live node is still checkpointing


def _rank0_says(expected: str):
    """A success check that wants rank 0's message to be ``expected`` (and records what it was shown)."""
    seen: list[tuple[PodState, ...]] = []

    def check(pods: tuple[PodState, ...]) -> str | None:
        seen.append(pods)
        return None if pods[0].message == expected else f"rank 0 said {pods[0].message!r}"

    return check, seen


@pytest.mark.parametrize(("message", "phase", "reason"), [
    ("ok", "Succeeded", "AllPodsSucceeded"),
    ("bad", "Failed", "OutputNotVerified"),
    (None, "Failed", "OutputNotVerified"),
])
def test_success_check_decides_between_succeeded_and_output_not_verified(message, phase, reason):
    check, seen = _rank0_says("ok")
    s = Scenario(3, verify_success=check).running(phase="Succeeded", pods={0: {"message": message}})
    d = s.decide()
    assert (d.status["phase"], condition(d, phase)["reason"]) == (phase, reason)
    assert [p.rank for p in seen[0]] == [0, 1, 2]
    if phase == "Failed":
        assert condition(d, "Failed")["message"] == f"rank 0 said {message!r}"
        assert [(e.type, e.reason) for e in d.events] == [("Warning", "OutputNotVerified")]
        assert condition(d, "Running")["status"] == "False" and d.status["completionTime"] == ts()


def test_success_check_waits_for_every_pod():
    check, seen = _rank0_says("ok")
    d = Scenario(2, verify_success=check).running(pods={0: {"phase": "Succeeded", "message": "ok"}}).decide()
    assert d.status["phase"] == "Running" and seen == []


def _pod(phase="Running", pod_ip=None, workload=None, other=None):
    statuses = [{"name": "workload", "state": workload}] if workload else []
    statuses += [{"name": "sidecar", "state": other}] if other else []
    status = {"phase": phase, "containerStatuses": statuses} | ({"podIP": pod_ip} if pod_ip else {})
    return {"metadata": {"name": "job-2-1", "labels": {"interp.dev/attempt": "2", "interp.dev/rank": "1"}},
            "spec": {"nodeName": "n1"}, "status": status}


@pytest.mark.parametrize(("pod", "ip", "exit_code", "message"), [
    (_pod("Pending"), None, None, None),
    (_pod(pod_ip="10.0.0.7", workload={"running": {}}), "10.0.0.7", None, None),
    (_pod("Succeeded", "10.0.0.7", {"terminated": {"exitCode": 0, "message": '{"verified": true}'}}),
     "10.0.0.7", 0, '{"verified": true}'),
    (_pod("Failed", "10.0.0.7", {"terminated": {"exitCode": 1, "message": ""}}), "10.0.0.7", 1, None),
    (_pod("Failed", "10.0.0.7", {"terminated": {"exitCode": 1}}, {"terminated": {"exitCode": 0, "message": "x"}}),
     "10.0.0.7", 1, None),
])
def test_pod_state_reads_ip_and_the_workloads_termination_message(pod, ip, exit_code, message):
    state = PodState.from_api(pod)
    assert (state.name, state.attempt, state.rank, state.node) == ("job-2-1", 2, 1, "n1")
    assert (state.ip, state.exit_code, state.message) == (ip, exit_code, message)


def _restarting(since: float = 0) -> list[dict]:
    return [{"type": "Restarting", "status": "True", "reason": "PodFailed", "message": "",
             "lastTransitionTime": ts(since)}]


def test_the_workloads_own_reason_reaches_the_condition_and_the_event():
    said = '{"error": "InvalidConfig", "message": "unknown hook point resid_pre.99; valid: resid_post.0-3"}'
    d = Scenario().running(pods={1: {"phase": "Failed", "exit_code": 1, "message": said}}).decide()
    expected = ("pod job-1-1 failed (exit code 1): InvalidConfig: unknown hook point resid_pre.99; "
                "valid: resid_post.0-3")
    assert condition(d, "Restarting")["message"] == expected
    assert d.events[0].message == f"{expected}; restarting the gang"
    permanent = Scenario().running(pods={0: {"phase": "Failed", "exit_code": 3, "message": "No module named x"}})
    assert "failed (exit code 3): No module named x" in condition(permanent.decide(), "Failed")["message"]


def test_a_log_tail_of_one_json_error_line_reads_as_that_line_not_as_a_termination_message():
    tail = '{"error": "steps must be >= 1", "event": "invalid config", "level": "error", "component": "probe"}'
    d = Scenario().running(pods={0: {"phase": "Failed", "exit_code": 3, "message": tail}}).decide()
    assert condition(d, "Failed")["message"].startswith("pod job-1-0 failed (exit code 3): invalid config: steps must")


def test_a_long_log_tail_is_cut_from_the_front():
    tail = "line\n" * 400 + "RuntimeError: CUDA out of memory"
    d = Scenario().running(pods={0: {"phase": "Failed", "exit_code": 1, "message": tail}}).decide()
    message = condition(d, "Restarting")["message"]
    assert message.endswith("RuntimeError: CUDA out of memory") and len(message) < 1100 and ": ...ine" in message


PROGRESS = '{"done": 57856, "percent": 28.25, "event": "progress", "rank": 1, "level": "info"}'


@pytest.mark.parametrize(("exit_code", "tail", "expected"), [
    (137, f"{PROGRESS}\n{PROGRESS}\n", "pod job-1-0 failed (exit code 137 (SIGKILL))"),
    (1, f"{PROGRESS}\nTraceback (most recent call last):\nValueError: bad batch",
     "pod job-1-0 failed (exit code 1): Traceback (most recent call last):\nValueError: bad batch"),
    (1, f'{PROGRESS}\n{{"event": "collective timed out", "error": "rank 1 silent", "level": "error"}}',
     "pod job-1-0 failed (exit code 1): collective timed out: rank 1 silent"),
    (143, "", "pod job-1-0 failed (exit code 143 (SIGTERM))"),
    (255, "", "pod job-1-0 failed (exit code 255)"),
])
def test_a_log_tail_gives_its_error_lines_not_the_progress_records(exit_code, tail, expected):
    d = Scenario().running(pods={0: {"phase": "Failed", "exit_code": exit_code, "message": tail}}).decide()
    assert condition(d, "Restarting")["message"] == expected


@pytest.mark.parametrize(("clean", "kept"), [("Running", {"job-1-1"}), ("All", set())])
def test_clean_pod_policy_decides_which_pods_of_a_failed_attempt_stay(clean, kept):
    s = Scenario(run={"cleanPodPolicy": clean}).running(pods={1: {"phase": "Failed", "exit_code": 1}})
    restarted = s.decide()
    assert {p.name for p in s.pods} - set(restarted.delete) == kept
    # The next attempt starts while the exited pod stays (it holds no capacity, its name is not reused)...
    waiting = Scenario(run={"cleanPodPolicy": clean}).status(**restarted.status)
    waiting.gang(1, ranks=sorted(int(n[-1]) for n in kept), phase="Failed")
    created = waiting.at(100).decide()
    assert created.create.attempt == 2 and created.delete == []
    # ...and until the attempt after it ends.
    later = Scenario(run={"cleanPodPolicy": clean}).status(**created.status).gang(2).gang(1, ranks=[1], phase="Failed")
    assert later.decide().delete == ([] if kept else ["job-1-1"])
    third = Scenario(run={"cleanPodPolicy": clean}).running(attempt=3).gang(1, ranks=[1], phase="Failed")
    assert third.decide().delete == ["job-1-1"]


@pytest.mark.parametrize("clean", ["Running", "All"])
def test_clean_pod_policy_when_the_job_fails(clean):
    s = Scenario(run={"cleanPodPolicy": clean}).running(pods={0: {"phase": "Failed", "exit_code": 3}})
    d = s.decide()
    assert d.status["phase"] == "Failed"
    assert sorted(d.delete) == (["job-1-1"] if clean == "Running" else ["job-1-0", "job-1-1"])


def test_pod_scope_restart_waits_for_the_backoff():
    policy = {"scope": "Pod", "backoffBaseSeconds": 10, "backoffMaxSeconds": 600}
    failed = Scenario(restart=policy).running(pods={1: {"phase": "Failed", "exit_code": 1, "message": "boom"}})
    d = failed.decide()
    assert d.delete == ["job-1-1"] and d.create is None and d.status["phase"] == "Running"
    assert condition(d, "Restarting")["status"] == "True"
    assert [(e.reason, e.message) for e in d.events] == [
        ("PodRestarting", "pod job-1-1 failed (exit code 1): boom; restarting that pod in 10s")]
    early = Scenario(restart=policy).status(**d.status).gang(1, ranks=[0]).at(4).decide()
    assert early.create is None and early.requeue_after == pytest.approx(6)
    due = Scenario(restart=policy).status(**d.status).gang(1, ranks=[0]).at(10).decide()
    assert due.create.ranks == (1,) and condition(due, "Restarting")["status"] == "False"
    assert due.events == []


@pytest.mark.parametrize(("restarts", "elapsed", "creates"), [(1, 9, False), (2, 19, False), (2, 20, True),
                                                              (5, 159, False), (5, 160, True), (9, 599, False)])
def test_pod_scope_backoff_doubles_up_to_the_maximum(restarts, elapsed, creates):
    s = Scenario(restart={"scope": "Pod", "backoffBaseSeconds": 10, "backoffMaxSeconds": 600, "backoffLimit": 20})
    s.running(restarts=restarts, ranks=[0]).status(conditions=_restarting())
    assert (s.at(elapsed).decide().create is not None) == creates


def test_a_crash_looping_service_pod_is_recreated_a_handful_of_times_not_a_thousand():
    """A server that dies at once, reconciled every 0.3 s for 90 s: the backoff (1 s doubling to 60 s, the service
    adapter's policy) allows at most 7 replacements, like the kubelet's CrashLoopBackOff."""
    policy = {"scope": "Pod", "backoffLimit": 1000, "backoffBaseSeconds": 1, "backoffMaxSeconds": 60}
    status: dict = {}
    pods: dict[int, str] = {}  # rank -> phase of the live pod
    creates = events = 0
    for step in range(300):
        s = Scenario(1, completes=False, restart=policy).status(**status).at(step * 0.3)
        for rank, phase in pods.items():
            s.gang(1, ranks=[rank], phase=phase, pods={rank: {"exit_code": 1} if phase == "Failed" else {}})
        d = s.decide()
        status, events = d.status, events + len(d.events)
        pods = {r: p for r, p in pods.items() if f"job-1-{r}" not in d.delete}
        if d.create is not None:
            creates += 1
            pods.update({r: "Failed" for r in d.create.ranks})  # it crashes before the next reconcile
    assert 2 <= creates <= 8, creates
    assert status["restarts"] in (creates - 1, creates) and events <= 2 * creates + 1


def test_gang_running_is_announced_once_even_when_the_kind_presents_another_phase():
    first = Scenario().status(phase="Pending", attempt=1, replicas=0, placement={"nodes": ["n0", "n1"]}).gang()
    d = first.decide()
    assert [e.reason for e in d.events] == ["GangRunning"]
    presented = {**d.status, "phase": "Ready"}  # what the service adapter stores
    again = Scenario().status(**presented).gang().at(60).decide()
    assert again.events == []


def test_pods_the_scheduler_refuses_say_why_once():
    why = '0/4 nodes are available: persistentvolumeclaim "data" not found.'
    s = Scenario().status(phase="Pending", attempt=1, replicas=0, placement={"nodes": ["n0", "n1"]})
    d = s.gang(phase="Pending", pods={0: {"node": None, "unschedulable": why}, 1: {"node": None, "unschedulable": why}})
    d = d.decide()
    scheduled = condition(d, "PodsScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    assert scheduled["message"] == f"pod job-1-0: {why} (and 1 more pods)"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "PodsUnschedulable")]
    again = Scenario().status(**d.status).gang(phase="Pending", pods={0: {"node": None, "unschedulable": why}})
    assert again.decide().events == []
    bound = Scenario().status(**d.status).gang().decide()
    assert condition(bound, "PodsScheduled")["status"] == "True"
    assert "PodsScheduled" not in {c["type"] for c in Scenario().running().decide().status["conditions"]}


def test_pod_state_reads_why_the_scheduler_refuses_it():
    pod = _pod("Pending")
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                    "message": 'persistentvolumeclaim "x" not found'}]
    assert PodState.from_api(pod).unschedulable == 'persistentvolumeclaim "x" not found'
    assert PodState.from_api(_pod("Pending")).unschedulable is None


def _healthy(running_since: float, restarted_at: float | None = None) -> list[dict]:
    """Conditions of an object running since ``running_since`` whose last restart completed at ``restarted_at``."""
    conditions = [{"type": "Running", "status": "True", "reason": "GangRunning", "message": "",
                   "lastTransitionTime": ts(running_since)}]
    if restarted_at is not None:
        conditions.append({"type": "Restarting", "status": "False", "reason": "PodRecreated", "message": "",
                           "lastTransitionTime": ts(restarted_at)})
    return conditions


def _kubelet_delay(restarts_in_a_row: int, base: float = 10, cap: float = 600) -> float:
    """The kubelet's CrashLoopBackOff written out: base, doubled per further restart, capped."""
    delay = base
    for _ in range(restarts_in_a_row - 1):
        delay = min(delay * 2, cap)
    return min(delay, cap)


GANG_POLICY = {"backoffBaseSeconds": 10, "backoffMaxSeconds": 600, "backoffLimit": 100}
FAILED_RANK_1 = {1: {"phase": "Failed", "exit_code": 1}}


@pytest.mark.parametrize(("ran", "delay"), [(599, _kubelet_delay(7)), (600, 10.0), (7200, 10.0)])
def test_a_gang_that_ran_ten_minutes_restarts_after_the_base_delay(ran, delay):
    """Six earlier crashes made the next delay 600 s; a run of 10 minutes without a failure resets it to the base."""
    s = Scenario(restart=GANG_POLICY).running(restarts=6, pods=FAILED_RANK_1).status(conditions=_healthy(0))
    d = s.at(ran).decide()
    assert (d.status["phase"], d.status["restarts"]) == ("Restarting", 7)
    waiting = Scenario(restart=GANG_POLICY).status(**d.status).at(ran + delay - 1).decide()
    assert waiting.create is None and waiting.requeue_after == pytest.approx(1)
    due = Scenario(restart=GANG_POLICY).status(**d.status).at(ran + delay).decide()
    assert due.create is not None and due.create.attempt == 2


def test_after_a_reset_the_backoff_doubles_again_and_the_limit_still_counts_every_restart():
    policy = {"backoffBaseSeconds": 10, "backoffMaxSeconds": 600, "backoffLimit": 10}
    s = Scenario(restart=policy).running(restarts=6, pods=FAILED_RANK_1).status(conditions=_healthy(0))
    status, now, delays = s.at(3600).decide().status, 3600.0, []
    reset = condition_of(status, "BackoffReset")
    assert (reset["status"], reset["reason"]) == ("True", "HealthyRun")
    assert reset["message"].startswith("6 restarts before a run of 3600s without a failure")
    for attempt in range(2, 5):  # each new gang crashes right after it runs
        started = Scenario(restart=policy).status(**status)
        wait = started.at(now).decide().requeue_after
        delays.append(wait)
        now += wait
        created = Scenario(restart=policy).status(**status).at(now).decide()
        assert created.create.attempt == attempt
        running = Scenario(restart=policy).status(**created.status).gang(attempt).at(now + 1).decide()
        failed = Scenario(restart=policy).status(**running.status).gang(attempt, pods=FAILED_RANK_1)
        status, now = failed.at(now + 2).decide().status, now + 2
    assert delays == [_kubelet_delay(n) for n in (1, 2, 3)]
    assert status["restarts"] == 10  # backoffLimit counts all restarts, forgiven or not
    last = Scenario(restart=policy).status(**status).at(now + 100).decide()
    assert last.create is not None
    gone = Scenario(restart=policy).status(**last.status).gang(5).at(now + 101).decide()
    over = Scenario(restart=policy).status(**gone.status).gang(5, pods=FAILED_RANK_1).at(now + 102).decide()
    assert condition(over, "Failed")["reason"] == "BackoffLimitExceeded"


@pytest.mark.parametrize(("ran", "in_a_row"), [(119, 7), (120, 1)])
def test_backoff_reset_seconds_sets_how_long_a_healthy_run_must_last(ran, in_a_row):
    policy = {**GANG_POLICY, "backoffResetSeconds": 120}
    s = Scenario(restart=policy).running(restarts=6, pods=FAILED_RANK_1).status(conditions=_healthy(0))
    d = s.at(ran).decide()
    assert (d.status["restarts"], d.status["consecutiveRestarts"]) == (7, in_a_row)
    assert Scenario(restart=policy).status(**d.status).at(ran).decide().requeue_after == _kubelet_delay(in_a_row)


def test_the_restarts_in_a_row_are_kept_in_the_status_not_read_back_from_a_message():
    s = Scenario(restart=GANG_POLICY).running(restarts=6, pods=FAILED_RANK_1).status(consecutiveRestarts=2)
    d = s.status(conditions=_healthy(0)).at(30).decide()
    assert (d.status["restarts"], d.status["consecutiveRestarts"]) == (7, 3)
    assert Scenario(restart=GANG_POLICY).status(**d.status).at(30).decide().requeue_after == _kubelet_delay(3)


def test_a_gang_that_never_ran_ten_minutes_keeps_doubling():
    s = Scenario(restart=GANG_POLICY).running(restarts=3, pods=FAILED_RANK_1).status(conditions=_healthy(0))
    d = s.at(599).decide()
    assert "BackoffReset" not in {c["type"] for c in d.status["conditions"]}
    assert Scenario(restart=GANG_POLICY).status(**d.status).at(599).decide().requeue_after == _kubelet_delay(4)


POD_POLICY = {"scope": "Pod", "backoffBaseSeconds": 10, "backoffMaxSeconds": 600, "backoffLimit": 100}


@pytest.mark.parametrize(("restarted_at", "failed_at", "delay"), [
    (0, 600, 10.0),      # the replacement ran 10 minutes: the backoff starts again
    (0, 599, 160.0),     # 599 s is not enough: the fifth restart in a row waits 10 × 2^4
    (500, 1000, 160.0),  # the object ran long, but the last restart completed 500 s ago
])
def test_a_pod_scope_restart_after_a_healthy_run_waits_the_base_delay(restarted_at, failed_at, delay):
    s = Scenario(restart=POD_POLICY).running(restarts=4, pods=FAILED_RANK_1)
    s.status(conditions=_healthy(-3600, restarted_at))
    d = s.at(failed_at).decide()
    assert d.delete == ["job-1-1"] and d.status["restarts"] == 5
    assert d.events[-1].message.endswith(f"restarting that pod in {delay:g}s")
    early = Scenario(restart=POD_POLICY).status(**d.status).gang(1, ranks=[0]).at(failed_at + delay - 1).decide()
    assert early.create is None and early.requeue_after == pytest.approx(1)
    due = Scenario(restart=POD_POLICY).status(**d.status).gang(1, ranks=[0]).at(failed_at + delay).decide()
    assert due.create.ranks == (1,)


def test_a_pod_failing_while_another_waits_for_its_backoff_is_no_healthy_run():
    restarting = [*_healthy(-3600), {"type": "Restarting", "status": "True", "reason": "PodFailed", "message": "",
                                     "lastTransitionTime": ts(-3000)}]
    s = Scenario(3, restart=POD_POLICY).running(restarts=2, ranks=[0, 1], pods=FAILED_RANK_1)
    d = s.status(conditions=restarting).decide()
    assert d.status["restarts"] == 3 and "BackoffReset" not in {c["type"] for c in d.status["conditions"]}
    assert d.events[-1].message.endswith("restarting that pod in 40s")


def test_a_changed_spec_of_a_failed_service_forgets_the_forgiven_restarts():
    reset = {"type": "BackoffReset", "status": "True", "reason": "HealthyRun", "message": "5 restarts before ...",
             "lastTransitionTime": ts()}
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "",
              "observedGeneration": 2, "lastTransitionTime": ts()}
    rollout = Rollout(replicas=1, revision="r", max_surge=1, max_unavailable=0)
    s = Scenario(1, completes=False, restart=POD_POLICY, rollout=rollout)
    d = s.status(phase="Failed", attempt=1, restarts=6, conditions=[reset, failed]).decide()
    assert (d.status["restarts"], d.status["consecutiveRestarts"]) == (0, 0)
    assert "BackoffReset" not in {c["type"] for c in d.status["conditions"]}


def condition_of(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)
