"""Node health and fault injection for the kubelet: killed processes, NotReady nodes with taint-based
eviction, deleted nodes (pod garbage collection), and claim binding."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import signal
import time
from typing import TYPE_CHECKING, Any

from .. import meta
from ..errors import ApiError
from ..nodes import UNREACHABLE_TAINT, ready_condition
from ..scheduler import tolerates

if TYPE_CHECKING:
    from ..api import Api
    from ..recorder import Recorder
    from .kubelet import KubeletConfig
    from .worker import PodWorker

Obj = dict[str, Any]


class NodeFaults:
    """The node-level half of :class:`Kubelet`."""

    api: Api
    config: KubeletConfig
    recorder: Recorder
    workers: dict[str, PodWorker]
    _node_up: dict[str, asyncio.Event]
    _evictions: dict[str, asyncio.Task[None]]
    _dirty_pods: set[tuple[str, str]]
    _wake: asyncio.Event

    def _resync_node(self, name: str) -> None:
        raise NotImplementedError

    async def node_up(self, name: str) -> None:
        event = self._node_up.get(name)
        if event is not None:
            await event.wait()

    def kill(self, namespace: str, name: str, container: str | None = None, sig: int = signal.SIGKILL) -> int:
        """Fault: signal a pod's container processes (all containers unless one is named)."""
        pod = self.api.store.get("/pods", (namespace, name))
        worker = self.workers.get(pod["metadata"]["uid"]) if pod else None
        if worker is None:
            raise ApiError(404, "NotFound", f'pod "{name}" has no running processes here')
        return worker.signal(container, sig)

    def set_node_ready(self, name: str, ready: bool, kill_processes: bool = True) -> None:
        """Fault: a node stops (or resumes) reporting; on a stop its processes die, as on a crashed host."""
        if name not in self._node_up:
            raise ApiError(404, "NotFound", f'node "{name}" is not run by this control plane')
        node = self.api.store.get("/nodes", ("", name))
        if node is None:
            raise ApiError(404, "NotFound", f'nodes "{name}" not found')
        new = copy.deepcopy(node)
        conditions = [c for c in new["status"].get("conditions") or [] if c["type"] != "Ready"]
        new["status"]["conditions"] = [*conditions, ready_condition(ready)]
        taints = [t for t in (new.get("spec") or {}).get("taints") or [] if t["key"] != UNREACHABLE_TAINT]
        if not ready:
            now = meta.now()
            taints += [{"key": UNREACHABLE_TAINT, "effect": "NoSchedule", "timeAdded": now},
                       {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": now}]
        new.setdefault("spec", {})["taints"] = taints
        self.api.store.put("/nodes", new)
        if ready:
            self._node_up[name].set()
            task = self._evictions.pop(name, None)
            if task:
                task.cancel()
            self._resync_node(name)
            return
        for worker in self.workers.values():
            if worker.pod["spec"].get("nodeName") == name:
                self._mark_not_ready(worker.pod)
        self._node_up[name].clear()
        if kill_processes:
            for worker in self.workers.values():
                if worker.pod["spec"].get("nodeName") == name:
                    worker.signal(None, signal.SIGKILL)
        self._evictions[name] = asyncio.create_task(self._evict(name))

    def _mark_not_ready(self, pod: Obj) -> None:
        current = self.api.store.get("/pods", (pod["metadata"]["namespace"], pod["metadata"]["name"]))
        if current is None:
            return
        new = copy.deepcopy(current)
        for condition in new["status"].get("conditions") or []:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status="False", reason="NodeNotReady", lastTransitionTime=meta.now())
        self.api.store.put("/pods", new)

    async def _evict(self, node: str) -> None:
        """Taint-based eviction: delete the node's pods once their unreachable toleration runs out."""
        started = time.monotonic()
        rt = self.api.registry.get("", "v1", "pods")
        taint = {"key": UNREACHABLE_TAINT, "effect": "NoExecute"}
        pending = True
        while pending:
            pending = False
            for pod in list(self.api.store.items("/pods")):
                if pod["spec"].get("nodeName") != node or pod["metadata"].get("deletionTimestamp"):
                    continue
                limit = self.config.eviction_seconds
                matching = [t for t in pod["spec"].get("tolerations") or [] if tolerates([t], taint)]
                if matching:
                    seconds = [t.get("tolerationSeconds") for t in matching]
                    if any(s is None for s in seconds):
                        continue  # tolerated forever
                    limit = min(float(s) for s in seconds)
                if time.monotonic() - started >= limit:
                    with contextlib.suppress(ApiError):
                        self.api.delete(rt, pod["metadata"]["namespace"], pod["metadata"]["name"])
                        self.recorder.event(pod, "TaintManagerEviction", f"Marking for deletion Pod "
                                            f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
                else:
                    pending = True
            if pending:
                await asyncio.sleep(0.2)

    def _bind_claim(self, claim: Obj) -> None:
        """Every claim binds at once to a directory under the state dir (no storage classes here)."""
        current = self.api.store.get("/persistentvolumeclaims", (claim["metadata"]["namespace"],
                                                                 claim["metadata"]["name"]))
        if current is None or (current.get("status") or {}).get("phase") == "Bound":
            return
        new = copy.deepcopy(current)
        spec = new.get("spec") or {}
        new["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                         "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {})
                                      .get("storage", "1Gi")}}
        (self.config.state_dir / "volumes" / claim["metadata"]["namespace"] / claim["metadata"]["name"]).mkdir(
            parents=True, exist_ok=True)
        self.api.store.put("/persistentvolumeclaims", new)

    def _node_deleted(self, name: str) -> None:
        """Pod garbage collection: pods bound to a deleted node are removed at once."""
        rt = self.api.registry.get("", "v1", "pods")
        for pod in list(self.api.store.items("/pods")):
            if pod["spec"].get("nodeName") == name:
                self.api._remove(rt, pod)
        if name in self._node_up:
            self._node_up[name].set()  # nothing waits on a node that is gone
            self.api.kubelet_nodes.discard(name)
        for worker in list(self.workers.values()):
            if worker.pod["spec"].get("nodeName") == name:
                self._dirty_pods.add((worker.pod["metadata"]["namespace"], worker.pod["metadata"]["name"]))
        self._wake.set()
