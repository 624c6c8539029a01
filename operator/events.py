"""Events about the custom resources, posted as client-go's recorder posts them.

Each Event names this operator as its reporting component and its pod as the instance, says which action the
operator took, and repeats of the same (object, type, reason, message) are folded into one Event whose ``count`` and
``lastTimestamp`` grow, as client-go's event correlator does, instead of a new Event per reconcile.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from .gang.lifecycle import Event

COMPONENT = "interp-operator"
CORRELATED = 4096
"""Recent Events remembered for folding repeats (the recorder's cache is of this order too)."""

# What the operator did, per reason (Event.action); other reasons are plain reconcile outcomes.
ACTIONS = {
    "GangCreated": "CreatePods", "GangRestarting": "RestartGang", "PodRestarting": "RestartPod",
    "Killing": "DeletePods", "Suspended": "DeletePods", "InsufficientCapacity": "Place",
    "PodsUnschedulable": "Place", "InvalidSpec": "Validate",
}


class EventWriter(Protocol):
    def post_event(self, namespace: str, body: Mapping[str, Any]) -> str | None: ...
    def bump_event(self, namespace: str, name: str, count: int, last_timestamp: str) -> bool: ...


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Recorder:
    def __init__(self, writer: EventWriter, instance: str | None = None) -> None:
        self.writer = writer
        self.instance = instance or os.environ.get("POD_NAME") or socket.gethostname()
        self._recent: OrderedDict[tuple[str, str, str, str], tuple[str, int]] = OrderedDict()

    def record(self, obj: Mapping[str, Any], event: Event, now: datetime | None = None) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        stamp = _timestamp(now or datetime.now(UTC))
        key = (meta.get("uid", ""), event.type, event.reason, event.message)
        known = self._recent.get(key)
        if known is not None:
            name, count = known
            if self.writer.bump_event(namespace, name, count + 1, stamp):
                self._recent[key] = (name, count + 1)
                self._recent.move_to_end(key)
                return
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'object')}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                               "name": meta.get("name", ""), "namespace": namespace, "uid": meta.get("uid", ""),
                               "resourceVersion": meta.get("resourceVersion", "")},
            "type": event.type, "reason": event.reason, "message": event.message,
            "action": ACTIONS.get(event.reason, "Reconcile"),
            "count": 1, "firstTimestamp": stamp, "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT, "reportingInstance": self.instance,
        }
        posted = self.writer.post_event(namespace, body)
        if posted is None:
            return  # dropped (e.g. the namespace is terminating), as client-go's recorder drops it
        self._recent[key] = (posted, 1)
        while len(self._recent) > CORRELATED:
            self._recent.popitem(last=False)
