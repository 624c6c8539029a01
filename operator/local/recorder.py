"""Events about pods and nodes, as the scheduler and kubelet of a real cluster post them.

Repeats of the same (object, reason, message) within the namespace are folded into one Event whose
count and lastTimestamp grow, as client-go's event correlator does.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

from . import meta
from .api import Api
from .errors import ApiError

Obj = dict[str, Any]


class Recorder:
    def __init__(self, api: Api, component: str):
        self.api = api
        self.component = component
        self._seen: dict[tuple[str, str, str, str], tuple[str, str]] = {}

    def event(self, obj: Obj, reason: str, message: str, kind: str = "Normal") -> None:
        md = obj["metadata"]
        namespace = md.get("namespace") or "default"
        key = (md.get("uid", ""), reason, message, kind)
        now = meta.now()
        known = self._seen.get(key)
        if known is not None:
            existing = self.api.store.get("/events", known)
            if existing is not None:
                updated = copy.deepcopy(existing)
                updated["count"] = existing.get("count", 1) + 1
                updated["lastTimestamp"] = now
                self.api.store.put("/events", updated)
                return
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{md['name']}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", ""),
                               "name": md["name"], "namespace": md.get("namespace", ""), "uid": md.get("uid", ""),
                               "resourceVersion": md.get("resourceVersion", "")},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": self.component}, "reportingComponent": self.component,
            "reportingInstance": self.component,
        }
        try:
            created = self.api.create(self.api.registry.get("", "v1", "events"), namespace, body)
        except ApiError:
            return  # e.g. the namespace is terminating: the event is dropped, as a real recorder drops it
        self._seen[key] = (namespace, created["metadata"]["name"])
        if len(self._seen) > 10000:
            self._seen.clear()
