"""Deletion: preconditions, propagation policies, finalizers, graceful pod deletion, namespaces."""

from __future__ import annotations

import builtins
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import bad_request, conflict, forbidden
from .registry import Registry, ResourceType
from .store import Store

Obj = dict[str, Any]


class DeletionMixin:
    """The delete half of :class:`interp_operator.local.api.Api`."""

    store: Store
    registry: Registry
    kubelet_nodes: set[str]
    cluster_ips: Any

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        raise NotImplementedError

    def _tracks_generation(self, rt: ResourceType) -> bool:
        raise NotImplementedError

    def delete(self, rt: ResourceType, namespace: str | None, name: str, options: Obj | None = None,
               dry_run: bool = False) -> tuple[Obj, bool]:
        """Delete or start deleting; returns the object and whether it is gone already."""
        options = options or {}
        obj = self.get(rt, namespace, name)
        if rt.group == "" and rt.plural == "namespaces" and name in ("default", "kube-system", "kube-public"):
            raise forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        md = obj["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != md["uid"]:
            raise conflict(rt.group, rt.plural, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                           f"UID in object meta: {md['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
            raise conflict(rt.group, rt.plural, name, "Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: {md['resourceVersion']}")
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise bad_request(f"propagationPolicy: Unsupported value: {policy!r}: supported values: \"Foreground\", "
                              f"\"Background\", \"Orphan\"")
        new = copy.deepcopy(obj)
        new_md = new["metadata"]
        finalizers = list(new_md.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        grace = options.get("gracePeriodSeconds")
        is_pod = rt.group == "" and rt.plural == "pods"
        if is_pod and grace is None:
            grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
        graceful_pod = is_pod and bool(grace) and obj["spec"].get("nodeName") in self.kubelet_nodes \
            and obj["status"].get("phase") not in ("Succeeded", "Failed")
        if rt.group == "" and rt.plural == "namespaces":
            finalizers = finalizers or []
            graceful_pod = False
        if md.get("deletionTimestamp"):
            if is_pod and grace is not None and grace < (md.get("deletionGracePeriodSeconds") or 0):
                if grace == 0 and not finalizers:
                    return (obj, True) if dry_run else (self._remove(rt, obj), True)
                return self._set_deletion(rt, new, finalizers, grace, dry_run), False
            if not finalizers and not graceful_pod:
                return (obj, False) if dry_run else (self._remove(rt, obj), True)
            if finalizers != list(md.get("finalizers") or []):
                new_md["finalizers"] = finalizers
                return (new if dry_run else self.store.put(rt.storage_key, new)), False
            return obj, False
        if rt.group == "" and rt.plural == "namespaces":
            new.setdefault("status", {})["phase"] = "Terminating"
            return self._set_deletion(rt, new, finalizers, 0, dry_run), False
        if finalizers or graceful_pod:
            return self._set_deletion(rt, new, finalizers, int(grace or 0) if graceful_pod else 0, dry_run), False
        if dry_run:
            return obj, True
        return self._remove(rt, obj), True

    def _set_deletion(self, rt: ResourceType, new: Obj, finalizers: builtins.list[str], grace: int,
                      dry_run: bool) -> Obj:
        md = new["metadata"]
        if finalizers:
            md["finalizers"] = finalizers
        when = datetime.now(UTC) + timedelta(seconds=grace or 0)
        md["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        md["deletionGracePeriodSeconds"] = grace or 0
        if self._tracks_generation(rt):
            md["generation"] = md.get("generation", 1) + 1
        return new if dry_run else self.store.put(rt.storage_key, new)

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        md = obj["metadata"]
        gone = self.store.remove(rt.storage_key, ((md.get("namespace") or ""), md["name"]))
        if rt.group == "" and rt.plural == "services":
            self.cluster_ips.release((obj.get("spec") or {}).get("clusterIP"))
        if rt.plural == "customresourcedefinitions" and rt.group == "apiextensions.k8s.io":
            for served in self.registry.remove_group_plural(obj["spec"]["group"], obj["spec"]["names"]["plural"]):
                self.store.drop_storage(served.storage_key)
        return gone or obj

    def finish_deletion(self, rt: ResourceType, obj: Obj) -> Obj | None:
        """Remove an object whose deletion is pending once nothing holds it any more (kubelet, controllers)."""
        current = self.store.get(rt.storage_key, ((obj["metadata"].get("namespace") or ""), obj["metadata"]["name"]))
        if current is None or current["metadata"]["uid"] != obj["metadata"]["uid"]:
            return None
        if current["metadata"].get("finalizers"):
            return None
        return self._remove(rt, current)


def awaits_kubelet(rt: ResourceType, obj: Obj, kubelet_nodes: set[str]) -> bool:
    return rt.group == "" and rt.plural == "pods" and (obj.get("spec") or {}).get("nodeName") in kubelet_nodes \
        and bool(obj["metadata"].get("deletionGracePeriodSeconds")) \
        and (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
