"""Independent replicas (an InterpInferenceService's server pods): scaling and rolling updates, as a pure function.

Every pod carries the *revision* of the spec it was made from (a hash of everything in the spec that shapes a pod;
``spec.replicas`` and ``spec.rollout`` are not part of it). A changed spec replaces old-revision pods with new ones
the way a Deployment's RollingUpdate strategy does, within two bounds:

- ``maxSurge``: pods of either revision above ``spec.replicas``, **terminating pods included**;
- ``maxUnavailable``: ready pods below ``spec.replicas``.

Counting terminating pods is what keeps ``maxSurge: 0`` from double-booking GPUs: the pod that replaces an old one is
created only once the old one is gone and its GPU released. (A Deployment does not count terminating pods, so for
the old pod's grace period both would hold a GPU, or the new one would sit unschedulable.) With ``maxSurge: 0`` an
update therefore needs no spare GPU, at the price of ``maxUnavailable`` replicas fewer while it runs.

Unready pods are deleted first: they serve nothing, so removing them costs no availability. Failed pods are not
counted here; the lifecycle replaces them (after the restart backoff).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .pods import PodState


@dataclass(frozen=True)
class Rollout:
    revision: str
    """Revision of the current spec; pods with another one are replaced."""
    replicas: int
    max_surge: int
    max_unavailable: int

    @classmethod
    def resolve(cls, revision: str, replicas: int, max_surge: int | str, max_unavailable: int | str) -> Rollout:
        """Absolute bounds from the spec's ints or percentages of ``replicas``: a surge rounds up, unavailability
        down (as a Deployment's do); when both come to 0 one replica may be unavailable, or nothing could move."""
        surge = _absolute(max_surge, replicas, round_up=True)
        unavailable = _absolute(max_unavailable, replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return cls(revision, replicas, surge, unavailable)


@dataclass(frozen=True)
class Step:
    create: int
    """New pods of the current revision to create now."""
    delete: tuple[str, ...]
    """Pods to delete now."""


def _absolute(value: int | str, replicas: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.endswith("%"):
        return int(text)
    scaled = int(text[:-1]) * replicas / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def step(rollout: Rollout, pods: Sequence[PodState]) -> Step:
    """What to create and delete now, given every observed pod of the object."""
    live = [p for p in pods if not p.finished]
    present = [p for p in live if not p.deleting]
    current = [p for p in present if p.revision == rollout.revision]
    outdated = [p for p in present if p.revision != rollout.revision]
    # Scaling down removes unready pods first, then the youngest (highest rank), as a ReplicaSet does.
    excess = sorted(current, key=lambda p: (p.ready, -p.rank))[:max(len(current) - rollout.replicas, 0)]
    wanted_gone = sorted(outdated, key=lambda p: (p.ready, p.rank)) + excess
    ready = sum(p.ready for p in present)
    spare = ready - max(rollout.replicas - rollout.max_unavailable, 0)  # ready pods that may go
    delete: list[str] = []
    for pod in wanted_gone:
        if pod.ready:
            if spare <= 0:
                continue
            spare -= 1
        delete.append(pod.name)
    room = rollout.replicas + rollout.max_surge - len(live)  # deleted pods still count until they are gone
    create = max(min(rollout.replicas - len(current), room), 0)
    return Step(create, tuple(delete))
