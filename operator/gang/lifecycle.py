"""The gang lifecycle as one pure function: (policy, observed state) → what to create and delete, the status, events.

Phases: Pending (no gang, or not all pods running yet) → Running → Succeeded | Failed, with Restarting between
attempts and Suspended while spec.runPolicy.suspend is set. Every new gang is a new *attempt*: its pods carry the
attempt number in their names, so a new gang never waits for the names of a terminating one.

Crash safety: the reconciler writes the status (attempt, planned nodes) before it creates pods. A reconcile that finds
fewer pods than the gang size and never saw the whole gang (status.replicas < size) creates the missing ranks; one that
had seen the whole gang treats a missing pod as a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..api.common import RestartPolicy, RunPolicy
from ..conditions import set_condition
from .placement import Placement, Unplaceable
from .pods import PodState, exit_detail
from .rollout import Rollout, step

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
UNPLACEABLE_RETRY_S = 15.0
DELETION_POLL_S = 2.0


@dataclass(frozen=True)
class Policy:
    """What the kind and its spec decide about the gang (built by the per-kind adapter)."""

    completes: bool
    """Jobs finish when every pod succeeded; services run until deleted."""
    size: int
    min_size: int
    max_size: int
    processes_per_pod: int
    restart: RestartPolicy
    run: RunPolicy = field(default_factory=RunPolicy)
    builtin_scheduler: bool = True
    verify_success: Callable[[tuple[PodState, ...]], str | None] | None = None
    """Once every pod succeeded: why the output cannot be trusted (the object fails, OutputNotVerified), or None."""
    rollout: Rollout | None = None
    """Independent replicas rather than a gang (services): scaled and rolled pod by pod, see :mod:`.rollout`."""


@dataclass(frozen=True)
class Observed:
    status: Mapping[str, Any]
    generation: int | None
    pods: tuple[PodState, ...]
    ready_nodes: frozenset[str]
    now: datetime


@dataclass(frozen=True)
class Create:
    attempt: int
    ranks: tuple[int, ...]
    size: int
    nodes: tuple[str, ...]
    """Planned node per rank of the whole gang; "" leaves a rank unpinned."""


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass
class Decision:
    status: dict[str, Any]
    create: Create | None = None
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_object: bool = False


def _parse_time(value: str | None) -> datetime | None:
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=None) if value else None


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c.get("type") == type_), None)


class _Reconcile:
    """One decision in the making; methods mutate ``self.out`` and return it when the decision is final."""

    def __init__(self, policy: Policy, observed: Observed, plan: Callable[[int, int], Placement | Unplaceable]):
        self.policy, self.obs, self.plan = policy, observed, plan
        self.now = observed.now.replace(tzinfo=None)
        status = dict(observed.status)
        status.setdefault("phase", "Pending")
        status.setdefault("attempt", 0)
        status.setdefault("restarts", 0)
        # A status written before the field existed: every restart so far counts as one in a row.
        status.setdefault("consecutiveRestarts", status["restarts"])
        status.setdefault("conditions", [])
        status["observedGeneration"] = observed.generation
        self.out = Decision(status=status)
        self.current = [p for p in observed.pods if p.attempt == status["attempt"]]
        self.keep_finished = policy.run.clean_pod_policy == "Running"
        # Older attempts' pods go, except (cleanPodPolicy Running) the exited pods of the attempt just before this
        # one: a restarted gang's failed pod stays, with its log, until the next attempt ends.
        self.out.delete += [p.name for p in observed.pods if p.attempt != status["attempt"] and not p.deleting
                            and not (self.keep_finished and p.finished and p.attempt == status["attempt"] - 1)]

    # -- helpers -------------------------------------------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any]:
        return self.out.status

    def condition(self, type_: str, value: str, reason: str, message: str) -> None:
        self.status["conditions"] = set_condition(
            self.status["conditions"], type_, value, reason, message, self.obs.generation, self.now
        )

    def transition(self, phase: str, reason: str, message: str, warning: bool = False) -> None:
        if self.status["phase"] != phase:
            self.event(reason, message, warning)
        self.status["phase"] = phase

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.out.events.append(Event("Warning" if warning else "Normal", reason, message))

    def holds(self, type_: str, value: str) -> bool:
        """Whether condition ``type_`` already has status ``value`` (the transition was announced before)."""
        return (_condition(self.status, type_) or {}).get("status") == value

    def backoff_delay(self) -> float:
        """Seconds between a failure and its restart: base × 2^(n−1) for the n-th restart since the last healthy run
        (or since the start), at most the maximum (both scopes)."""
        restart = self.policy.restart
        in_a_row = self.status["consecutiveRestarts"]
        return float(min(restart.backoff_base_seconds * 2 ** max(in_a_row - 1, 0), restart.backoff_max_seconds))

    def healthy_for(self) -> float:
        """Seconds the object has run without a failure: since its Running condition turned True or its last
        restart completed (Restarting turned False), whichever is later; 0 while not running or restarting."""
        running, restarting = _condition(self.status, "Running"), _condition(self.status, "Restarting")
        if (running or {}).get("status") != "True" or (restarting or {}).get("status") == "True":
            return 0.0
        since = [_parse_time(c.get("lastTransitionTime")) for c in (running, restarting) if c]
        latest = max((t for t in since if t is not None), default=None)
        return (self.now - latest).total_seconds() if latest is not None else 0.0

    def reset_backoff_after_a_healthy_run(self) -> None:
        """Called on a failure before it is counted: a long healthy run forgives the restarts before it."""
        ran, restarts = self.healthy_for(), self.status["consecutiveRestarts"]
        reset_after = self.policy.restart.backoff_reset_seconds
        if ran < reset_after or restarts == 0:
            return
        self.status["consecutiveRestarts"] = 0
        counted = f"{restarts} restart{'s' if restarts != 1 else ''}"
        self.condition("BackoffReset", "True", "HealthyRun",
                       f"{counted} before a run of {ran:.0f}s without a failure no longer lengthen the restart "
                       f"backoff (it starts again from backoffBaseSeconds after {reset_after}s of running)")

    def backoff_remaining(self) -> float:
        """Seconds until the restart announced by the Restarting condition may happen (≤ 0: now)."""
        since = _parse_time((_condition(self.status, "Restarting") or {}).get("lastTransitionTime"))
        return ((since or self.now) + timedelta(seconds=self.backoff_delay()) - self.now).total_seconds()

    def gang_size(self) -> int:
        nodes = (self.status.get("placement") or {}).get("nodes") or []
        return len(nodes) if nodes else self.policy.size

    def delete_live(self, finished_too: bool = True) -> None:
        self.out.delete += [p.name for p in self.current if not p.deleting and p.name not in self.out.delete
                            and (finished_too or not p.finished)]

    def finish(self, phase: str, reason: str, message: str) -> Decision:
        if not self.holds(phase, "True"):
            self.event(reason, message, warning=phase == "Failed")
        self.status["phase"] = phase
        self.condition(phase, "True", reason, message)
        self.condition("Running", "False", reason, message)
        self.status["completionTime"] = self.now.strftime(TIME_FORMAT)
        return self.after_finished()  # finished pods stay, like a Job's, for their logs

    # -- phases --------------------------------------------------------------------------------------------------
    def after_finished(self) -> Decision:
        self.delete_live(finished_too=not self.keep_finished)
        ttl = self.policy.run.ttl_seconds_after_finished
        done = _parse_time(self.status.get("completionTime"))
        if ttl is not None and done is not None:
            remaining = (done + timedelta(seconds=ttl) - self.now).total_seconds()
            if remaining <= 0:
                self.out.delete_object = True
            else:
                self.out.requeue_after = remaining
        return self.out

    def suspend(self) -> Decision:
        self.delete_live()
        self.transition("Suspended", "Suspended", "runPolicy.suspend is set: pods deleted")
        self.condition("Suspended", "True", "Suspended", "runPolicy.suspend is set")
        self.condition("Running", "False", "Suspended", "runPolicy.suspend is set")
        self.status["replicas"] = self.status["readyReplicas"] = 0
        return self.out

    def start_gang(self) -> Decision:
        """Create the next attempt when the old pods are gone and the backoff has passed."""
        # A pod on a lost node cannot confirm its deletion until the node returns; the next attempt's pods have new
        # names and the lost node is out of placement, so such pods do not hold the gang back.
        # Exited pods hold no capacity and the next attempt's names differ: cleanPodPolicy decides whether they stay.
        if any(p.node is None or p.node in self.obs.ready_nodes for p in self.current if not p.finished):
            self.delete_live(finished_too=not self.keep_finished)
            self.out.requeue_after = DELETION_POLL_S
            return self.out
        if self.status["phase"] == "Restarting":
            remaining = self.backoff_remaining()
            if remaining > 0:
                self.out.requeue_after = remaining
                return self.out
        placement = self.plan(self.policy.min_size, self.policy.max_size)
        if isinstance(placement, Unplaceable):
            # Announced once per wait, on the first reconcile too (where the phase is already Pending).
            if not self.holds("PodsPlaced", "False"):
                self.event(placement.reason, placement.message, warning=True)
            self.condition("PodsPlaced", "False", placement.reason, placement.message)
            if self.status["phase"] != "Restarting":
                self.status["phase"] = "Pending"
            self.out.requeue_after = UNPLACEABLE_RETRY_S
            return self.out
        attempt = self.status["attempt"] + 1
        self.status["attempt"] = attempt
        if self.policy.builtin_scheduler:
            domain = {"topologyKey": placement.topology_key, "domain": placement.domain}
            self.status["placement"] = {k: v for k, v in domain.items() if v} | {"nodes": list(placement.nodes)}
        else:
            self.status.pop("placement", None)
        self.status["worldSize"] = placement.size * self.policy.processes_per_pod
        self.status["replicas"] = self.status["readyReplicas"] = 0
        where = f" in {placement.topology_key}={placement.domain}" if placement.domain else ""
        message = f"attempt {attempt}: {placement.size} pods{where}"
        self.condition("PodsPlaced", "True", "Placed", message)
        self.condition("Restarting", "False", "GangCreated", message)
        self.status["phase"] = "Pending"
        self.out.events.append(Event("Normal", "GangCreated", message))  # every attempt, also the first
        self.status.setdefault("startTime", self.now.strftime(TIME_FORMAT))
        self.out.create = Create(attempt, tuple(range(placement.size)), placement.size, placement.nodes)
        return self.out

    def failure(self) -> tuple[PodState | None, str]:
        size, seen_all = self.gang_size(), self.status.get("replicas", 0) >= self.gang_size()
        for pod in sorted(self.current, key=lambda p: p.rank):
            if pod.deleting and self.policy.restart.scope == "Pod":
                continue  # already handled: its rank is recreated once it is gone
            if pod.failed:
                detail = exit_detail(pod.exit_code) if pod.exit_code is not None else (pod.reason or "failed")
                said = pod.failure_text()
                return pod, f"pod {pod.name} failed ({detail})" + (f": {said}" if said else "")
            if pod.node and pod.node not in self.obs.ready_nodes and not pod.finished:
                return pod, f"pod {pod.name} lost its node {pod.node}"
            if pod.deleting and not pod.finished:
                return pod, f"pod {pod.name} was deleted"
        present = {p.rank for p in self.current}
        missing = [r for r in range(size) if r not in present]
        if missing and seen_all and self.policy.restart.scope == "Gang":
            return None, f"pod of rank {missing[0]} disappeared"
        return None, ""

    def restart(self, pod: PodState | None, message: str) -> Decision:
        restart = self.policy.restart
        if pod is not None and pod.exit_code in restart.permanent_exit_codes:
            return self.finish("Failed", "PermanentFailure", f"{message}: exit code listed in permanentExitCodes")
        if self.status["restarts"] >= restart.backoff_limit:
            return self.finish("Failed", "BackoffLimitExceeded",
                               f"{message}; backoffLimit {restart.backoff_limit} reached")
        self.reset_backoff_after_a_healthy_run()
        self.status["restarts"] += 1
        self.status["consecutiveRestarts"] += 1
        if restart.scope == "Pod" and pod is not None:
            # The pod goes now (its replacement takes its name); the replacement waits for the backoff, measured
            # from the Restarting condition's transition, like the kubelet's CrashLoopBackOff.
            if not pod.deleting:
                self.out.delete.append(pod.name)
            self.condition("Restarting", "True", "PodFailed", message)
            self.event("PodRestarting", f"{message}; restarting that pod in {self.backoff_delay():g}s", warning=True)
            self.out.requeue_after = DELETION_POLL_S
            return self.out
        self.delete_live(finished_too=not self.keep_finished)
        self.transition("Restarting", "GangRestarting", f"{message}; restarting the gang", warning=True)
        self.condition("Restarting", "True", "PodFailed", message)
        self.condition("Running", "False", "PodFailed", message)
        self.out.requeue_after = DELETION_POLL_S
        return self.out

    def observe(self) -> Decision:
        size = self.gang_size()
        live = [p for p in self.current if not p.deleting]
        running = [p for p in live if p.phase == "Running"]
        self.status["replicas"] = len(live)
        self.status["readyReplicas"] = sum(1 for p in running if p.ready)
        if self.policy.completes and len(self.current) == size and all(p.phase == "Succeeded" for p in self.current):
            verify = self.policy.verify_success
            problem = verify(tuple(sorted(self.current, key=lambda p: p.rank))) if verify else None
            if problem:
                return self.finish("Failed", "OutputNotVerified", problem)
            return self.finish("Succeeded", "AllPodsSucceeded", f"all {size} pods succeeded")
        present = {p.rank for p in self.current}
        missing = tuple(r for r in range(size) if r not in present)
        self.scheduling(live)
        restarting = self.holds("Restarting", "True")  # a Pod-scope restart waits for its backoff
        remaining = self.backoff_remaining() if missing and restarting else 0.0
        if missing and remaining > 0:
            self.out.requeue_after = remaining
        elif missing:  # crash recovery (Gang) or a restarted pod (Pod scope): create the missing ranks
            nodes = tuple((self.status.get("placement") or {}).get("nodes") or ())
            nodes = tuple(n if n in self.obs.ready_nodes else "" for n in nodes)
            self.out.create = Create(self.status["attempt"], missing, size, nodes)
            if restarting:
                ranks = ", ".join(map(str, missing))
                self.condition("Restarting", "False", "PodRecreated", f"rank {ranks} recreated after the backoff")
        if len(running) + sum(1 for p in live if p.phase == "Succeeded") == size and running:
            message = f"{len(running)} of {size} pods running"
            if not self.holds("Running", "True"):  # services present another phase: the condition remembers
                self.event("GangRunning", message)
            self.status["phase"] = "Running"
            self.condition("Running", "True", "GangRunning", message)
        return self.out

    def scheduling(self, live: list[PodState]) -> None:
        """Say why pods are not bound (as the scheduler's FailedScheduling does): a claim that does not exist, say."""
        waiting = sorted((p for p in live if p.phase == "Pending" and p.unschedulable), key=lambda p: p.rank)
        if waiting:
            message = f"pod {waiting[0].name}: {waiting[0].unschedulable}"
            if len(waiting) > 1:
                message += f" (and {len(waiting) - 1} more pods)"
            if not self.holds("PodsScheduled", "False"):
                self.event("PodsUnschedulable", message, warning=True)
            self.condition("PodsScheduled", "False", "Unschedulable", message)
        elif self.holds("PodsScheduled", "False"):
            self.condition("PodsScheduled", "True", "Scheduled", "every pod is bound to a node")

    def serve(self, rollout: Rollout) -> Decision:
        """Independent replicas: a failed pod is replaced alone (after the backoff), by a pod of the current spec;
        scaling and a changed spec create and delete pods within maxSurge and maxUnavailable."""
        if self.status["attempt"] == 0:  # one attempt for the object's life: replicas come and go within it
            self.status["attempt"] = 1
            self.status["startTime"] = self.now.strftime(TIME_FORMAT)
        pod, message = self.failure()
        if message:
            return self.restart(pod, message)
        # A terminating pod on a lost node cannot confirm its deletion until the node returns, and holds no GPU on a
        # node that can take pods: it does not count against the surge (as in start_gang).
        holding = [p for p in self.current if not (p.deleting and p.node and p.node not in self.obs.ready_nodes)]
        planned = step(rollout, holding)
        self.out.delete += [name for name in planned.delete if name not in self.out.delete]
        restarting = self.holds("Restarting", "True")
        remaining = self.backoff_remaining() if planned.create and restarting else 0.0
        if remaining > 0:
            self.out.requeue_after = remaining
        elif planned.create:
            # Fresh ranks: a new pod never waits for the name of a terminating one, and a reconcile on a lagging
            # cache that plans the same pods again gets AlreadyExists instead of a duplicate.
            first = max((p.rank for p in self.current), default=-1) + 1
            self.out.create = Create(self.status["attempt"], tuple(range(first, first + planned.create)),
                                     rollout.replicas, ())
            if restarting:
                self.condition("Restarting", "False", "PodRecreated", "the failed replica was replaced")
        if planned.delete or self.out.create:  # follow the pods until they are gone or ready
            self.out.requeue_after = DELETION_POLL_S
        present = [p for p in self.current if not p.finished and not p.deleting]
        updated = [p for p in present if p.revision == rollout.revision]
        ready = sum(p.ready for p in present)
        self.status["replicas"], self.status["readyReplicas"] = len(present), ready
        self.status["updatedReplicas"] = len(updated)
        self.scheduling(present)
        self.progress(rollout, len(present), len(updated), sum(p.ready for p in updated))
        if ready:
            message = f"{ready} of {rollout.replicas} replicas ready"
            if not self.holds("Running", "True"):
                self.event("GangRunning", message)
            self.status["phase"] = "Running"
            self.condition("Running", "True", "ReplicasReady", message)
        else:
            self.status["phase"] = "Pending"
            self.condition("Running", "False", "NoReplicaReady", f"0 of {rollout.replicas} replicas ready")
        return self.out

    def progress(self, rollout: Rollout, present: int, updated: int, updated_ready: int) -> None:
        """The Progressing condition: a rolling update (until every replica of the new spec is ready), scaling, or
        done; an event when an update or a scaling starts, and when an update completes."""
        previous = (_condition(self.status, "Progressing") or {}).get("reason")
        complete = present == updated == updated_ready == rollout.replicas
        if present > updated or (previous == "RollingUpdate" and not complete):
            reason = "RollingUpdate"
            message = (f"{updated} of {rollout.replicas} replicas at revision {rollout.revision}, "
                       f"{present - updated} older left (maxSurge {rollout.max_surge}, "
                       f"maxUnavailable {rollout.max_unavailable})")
        elif updated != rollout.replicas:
            reason, message = "Scaling", f"{updated} replicas, scaling to {rollout.replicas}"
        elif not complete:
            reason, message = "ReplicasStarting", f"{updated_ready} of {rollout.replicas} replicas ready"
        else:
            reason, message = "Complete", f"{rollout.replicas} replicas ready at revision {rollout.revision}"
        if reason != previous and reason in ("RollingUpdate", "Scaling"):
            self.event(reason, message)
        elif reason == "Complete" and previous == "RollingUpdate":
            self.event("RolloutComplete", message)
        self.condition("Progressing", "False" if complete else "True", reason, message)

    def retry_changed_spec(self) -> bool:
        """A service that failed for good (a bad model or SAE) starts again once its spec changed since."""
        failed = _condition(self.status, "Failed") or {}
        since = failed.get("observedGeneration")
        if failed.get("status") != "True" or since is None or self.obs.generation is None \
                or self.obs.generation <= since:
            return False
        message = f"the spec changed (generation {since} -> {self.obs.generation}): trying again"
        self.condition("Failed", "False", "SpecChanged", message)
        self.event("SpecChanged", message)
        self.status["phase"], self.status["restarts"], self.status["consecutiveRestarts"] = "Pending", 0, 0
        self.status["conditions"] = [c for c in self.status["conditions"] if c.get("type") != "BackoffReset"]
        self.status.pop("completionTime", None)
        return True

    def decide(self) -> Decision:
        phase = self.status["phase"]
        rollout = self.policy.rollout
        if rollout is not None and phase == "Failed" and self.retry_changed_spec():
            return self.serve(rollout)
        if phase in ("Succeeded", "Failed"):
            return self.after_finished()
        if rollout is not None:
            return self.serve(rollout)
        if self.policy.run.suspend:
            return self.suspend()
        if phase == "Suspended":
            self.condition("Suspended", "False", "Resumed", "runPolicy.suspend was cleared")
            self.transition("Pending", "Resumed", "runPolicy.suspend was cleared")
            return self.start_gang()
        deadline = self.policy.run.active_deadline_seconds
        started = _parse_time(self.status.get("startTime"))
        if deadline is not None and started is not None and (self.now - started).total_seconds() >= deadline:
            return self.finish("Failed", "DeadlineExceeded", f"active for more than {deadline}s")
        if phase == "Restarting" or self.status["attempt"] == 0:
            return self.start_gang()
        pod, message = self.failure()
        if message:
            return self.restart(pod, message)
        return self.observe()


def decide(
    policy: Policy, observed: Observed, plan: Callable[[int, int], Placement | Unplaceable]
) -> Decision:
    """Decide one reconcile. ``plan(min_size, max_size)`` is called only when a new gang must be placed."""
    return _Reconcile(policy, observed, plan).decide()
