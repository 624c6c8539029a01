"""Garbage collection by ownerReferences and namespace deletion, as kube-controller-manager does them.

Both react to store events through a queue drained by one asyncio task, so a deletion never recurses into
another inside a store write.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from ..logs import get_logger
from .api import Api
from .errors import ApiError
from .registry import ResourceType
from .store import Event

Obj = dict[str, Any]
_log = get_logger("interp_operator.local.controllers")


class Controllers:
    def __init__(self, api: Api):
        self.api = api
        self._owner_gone: set[str] = set()  # uids whose dependents need a look
        self._check_new: set[tuple[str, str, str]] = set()  # dependents created after their owners vanished
        self._owners_deleting: set[tuple[str, str, str]] = set()  # foreground / orphan finalizers
        self._namespaces: set[str] = set()
        self._waiting_namespaces: set[str] = set()  # deleting, with content still going away
        self._wake = asyncio.Event()
        self._uids: dict[str, tuple[str, str, str]] = {}
        api.store.add_listener(self._on_event)
        for key in api.store.storage_keys():
            for obj in api.store.items(key):
                self._uids[obj["metadata"]["uid"]] = _ref(key, obj)

    def _on_event(self, storage_key: str, event: Event) -> None:
        md = event.obj["metadata"]
        ref = _ref(storage_key, event.obj)
        if md.get("namespace") in self._waiting_namespaces and (event.type == "DELETED"
                                                                 or md.get("deletionTimestamp")):
            self._waiting_namespaces.discard(md["namespace"])
            self._namespaces.add(md["namespace"])
        if event.type == "DELETED":
            self._uids.pop(md["uid"], None)
            if self.api.store.dependents(md["uid"]):
                self._owner_gone.add(md["uid"])
            for owner in md.get("ownerReferences") or []:
                # An owner in foreground deletion may have been waiting for this dependent.
                if owner.get("uid") in self._uids:
                    self._owners_deleting.add(self._uids[owner["uid"]])
        else:
            self._uids[md["uid"]] = ref
            if event.type == "ADDED" and md.get("ownerReferences"):
                self._check_new.add(ref)
            finalizers = md.get("finalizers") or []
            if md.get("deletionTimestamp") and ("foregroundDeletion" in finalizers or "orphan" in finalizers):
                self._owners_deleting.add(ref)
            if storage_key == "/namespaces" and md.get("deletionTimestamp"):
                self._namespaces.add(md["name"])
        if self._owner_gone or self._check_new or self._owners_deleting or self._namespaces:
            self._wake.set()

    def exists(self, uid: str) -> bool:
        return uid in self._uids

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.step()
            except Exception:  # a controller bug must not stop collection for everything else
                _log.exception("controller step failed")
            # Yield so that requests interleave with long collection runs.
            await asyncio.sleep(0)

    def step(self) -> None:
        while self._owner_gone or self._check_new or self._owners_deleting or self._namespaces:
            gone, self._owner_gone = self._owner_gone, set()
            for uid in gone:
                for dep in self.api.store.dependents(uid):
                    self._collect_if_orphaned(dep)
            new, self._check_new = self._check_new, set()
            for dep in new:
                self._collect_if_orphaned(dep)
            owners, self._owners_deleting = self._owners_deleting, set()
            for owner in owners:
                self._finish_owner(owner)
            namespaces, self._namespaces = self._namespaces, set()
            for name in namespaces:
                self._drain_namespace(name)

    # -- garbage collection ------------------------------------------------------------------------------
    def _type(self, storage_key: str) -> ResourceType | None:
        for rt in self.api.registry.all():
            if rt.storage_key == storage_key and rt.group != "events.k8s.io":
                return rt
        return None

    def _collect_if_orphaned(self, dep: tuple[str, str, str]) -> None:
        storage_key, namespace, name = dep
        obj = self.api.store.get(storage_key, (namespace, name))
        rt = self._type(storage_key)
        if obj is None or rt is None or obj["metadata"].get("deletionTimestamp"):
            return
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs or any(self.exists(r.get("uid", "")) for r in refs):
            return
        self._delete(rt, obj, "Background")

    def _delete(self, rt: ResourceType, obj: Obj, policy: str) -> None:
        md = obj["metadata"]
        try:
            self.api.delete(rt, md.get("namespace"), md["name"],
                            {"propagationPolicy": policy, "preconditions": {"uid": md["uid"]}})
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise

    def _finish_owner(self, owner: tuple[str, str, str]) -> None:
        storage_key, namespace, name = owner
        obj = self.api.store.get(storage_key, (namespace, name))
        rt = self._type(storage_key)
        if obj is None or rt is None:
            return
        uid = obj["metadata"]["uid"]
        finalizers = list(obj["metadata"].get("finalizers") or [])
        dependents = [d for d in self.api.store.dependents(uid)]
        if "orphan" in finalizers:
            for dep in dependents:
                self._orphan(dep, uid)
            finalizers.remove("orphan")
        elif "foregroundDeletion" in finalizers:
            waiting = False
            for dep_key, dep_ns, dep_name in dependents:
                dependent = self.api.store.get(dep_key, (dep_ns, dep_name))
                dep_rt = self._type(dep_key)
                if dependent is None or dep_rt is None:
                    continue
                waiting = True
                if not dependent["metadata"].get("deletionTimestamp"):
                    # Like the real collector: foreground only for dependents that have dependents themselves.
                    has_own = bool(self.api.store.dependents(dependent["metadata"]["uid"]))
                    self._delete(dep_rt, dependent, "Foreground" if has_own else "Background")
            if waiting:
                return
            finalizers.remove("foregroundDeletion")
        else:
            return
        self._set_finalizers(rt, obj, finalizers)

    def _orphan(self, dep: tuple[str, str, str], owner_uid: str) -> None:
        storage_key, namespace, name = dep
        obj = self.api.store.get(storage_key, (namespace, name))
        rt = self._type(storage_key)
        if obj is None or rt is None:
            return
        new = copy.deepcopy(obj)
        refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self.api.store.put(storage_key, new)

    def _set_finalizers(self, rt: ResourceType, obj: Obj, finalizers: list[str]) -> None:
        new = copy.deepcopy(obj)
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
            self.api.store.put(rt.storage_key, new)
            return
        new["metadata"].pop("finalizers", None)
        self.api.store.put(rt.storage_key, new)
        self.api.finish_deletion(rt, new)

    # -- namespaces ---------------------------------------------------------------------------------------
    def _drain_namespace(self, name: str) -> None:
        ns = self.api.store.get("/namespaces", ("", name))
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for rt in self.api.registry.all():
            if not rt.namespaced or rt.group == "events.k8s.io" or not self._is_storage_owner(rt):
                continue
            for obj in list(self.api.store.items(rt.storage_key)):
                if obj["metadata"].get("namespace") != name:
                    continue
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(rt, obj, "Background")
        if remaining:
            # Objects held by finalizers or graceful termination: look again when they change.
            self._waiting_namespaces.add(name)
            return
        new = copy.deepcopy(ns)
        new["spec"]["finalizers"] = []
        self.api.store.put("/namespaces", new)
        self.api.finish_deletion(self.api.registry.get("", "v1", "namespaces"), new)

    def _is_storage_owner(self, rt: ResourceType) -> bool:
        return self._type(rt.storage_key) is rt


def _ref(storage_key: str, obj: Obj) -> tuple[str, str, str]:
    md = obj["metadata"]
    return storage_key, md.get("namespace") or "", md["name"]
