"""The kubelet of every simulated node: pod workers, pod IPs, DNS table, logs, node health and faults."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...logs import get_logger
from .. import endpoints
from ..api import Api
from ..errors import bad_request
from ..nodes import NodeConfig
from ..recorder import Recorder
from ..store import Event
from . import dns
from .faults import NodeFaults
from .worker import PodWorker

Obj = dict[str, Any]
_log = get_logger("interp_operator.local.kubelet")
_TERMINAL = ("Succeeded", "Failed")


@dataclass
class KubeletConfig:
    state_dir: Path
    nodes: list[NodeConfig] = field(default_factory=lambda: [NodeConfig("node-0")])
    api_url: str = ""
    kubeconfig: Path | None = None
    restart_backoff: float = 1.0
    max_restart_backoff: float = 30.0
    # Seconds a pod stays bound to a NotReady node before eviction (the real default toleration is 300 s).
    eviction_seconds: float = 30.0
    pod_network: str = "127.1.0.0/16"


def _dns_relevant(event: Event) -> bool:
    """Whether a pod event can change name resolution (its IP, readiness, labels or deletion)."""
    def view(pod: Obj | None) -> Any:
        if pod is None or not (pod.get("status") or {}).get("podIP"):
            return None
        ready = [c.get("status") for c in pod["status"].get("conditions") or [] if c.get("type") == "Ready"]
        md = pod["metadata"]
        return (pod["status"]["podIP"], ready, md.get("labels"), bool(md.get("deletionTimestamp")),
                pod["spec"].get("hostname"), pod["spec"].get("subdomain"))

    if event.type == "DELETED":
        return view(event.prev) is not None
    return view(event.obj) != view(event.prev)


class Kubelet(NodeFaults):
    def __init__(self, api: Api, config: KubeletConfig):
        self.api = api
        self.config = config
        self.workers: dict[str, PodWorker] = {}
        self._terminating: set[str] = set()
        self._ips: dict[str, str] = {}
        self._free_ips = (str(ip) for ip in ipaddress.ip_network(config.pod_network).hosts())
        self._released: list[str] = []
        self._node_up: dict[str, asyncio.Event] = {}
        self._evictions: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._dns_dirty = True
        self._dirty_pods: set[tuple[str, str]] = set()
        self._sources_dirty: set[tuple[str, str, str]] = set()
        self.hosts_file = config.state_dir / "dns" / "hosts.json"
        self.hook_dir = dns.install_hook(config.state_dir / "dns" / "python")
        self._tasks: set[asyncio.Task[Any]] = set()
        self.recorder = Recorder(api, "kubelet")
        for node in config.nodes:
            self.add_node(node)
        api.store.add_listener(self._on_event)

    def add_node(self, node: NodeConfig) -> None:
        """Register a node run by this kubelet (at start, or later to grow the cluster)."""
        self.api.create(self.api.registry.get("", "v1", "nodes"), None, node.node_object())
        self._node_up[node.name] = asyncio.Event()
        self._node_up[node.name].set()
        self.api.kubelet_nodes.add(node.name)

    # -- events ------------------------------------------------------------------------------------------
    def _on_event(self, storage_key: str, event: Event) -> None:
        if storage_key == "/pods":
            md = event.obj["metadata"]
            if event.obj["spec"].get("nodeName") in self._node_up or md["uid"] in self.workers:
                self._dirty_pods.add((md["namespace"], md["name"]))
                self._wake.set()
            if _dns_relevant(event):
                self._dns_dirty = True
                self._wake.set()
        elif storage_key == "/services":
            self._dns_dirty = True
            self._wake.set()
        elif storage_key in ("/configmaps", "/secrets"):
            md = event.obj["metadata"]
            self._sources_dirty.add((storage_key[1:], md.get("namespace", ""), md["name"]))
            self._wake.set()
        elif storage_key == "/nodes" and event.type == "DELETED":
            # Not inside the store's notification: deleting pods here would nest writes.
            asyncio.get_running_loop().call_soon(self._node_deleted, event.obj["metadata"]["name"])
        elif storage_key == "/persistentvolumeclaims" and event.type == "ADDED":
            asyncio.get_running_loop().call_soon(self._bind_claim, event.obj)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.sync()
            except Exception:
                _log.exception("kubelet sync failed")
            await asyncio.sleep(0.01)  # coalesce bursts of pod events into one pass

    def sync(self) -> None:
        dirty, self._dirty_pods = self._dirty_pods, set()
        by_key = {(w.pod["metadata"]["namespace"], w.pod["metadata"]["name"]): w for w in self.workers.values()}
        for key in dirty:
            pod = self.api.store.get("/pods", key)
            worker = by_key.get(key)
            if worker is not None and (pod is None or pod["metadata"]["uid"] != worker.uid):
                self.workers.pop(worker.uid, None)  # force-deleted (or replaced): nobody waits for it
                self._spawn(self._stop_forgotten(worker))
            if pod is not None:
                self._sync_pod(pod)
        if self._sources_dirty:
            sources, self._sources_dirty = self._sources_dirty, set()
            for worker in self.workers.values():
                ns = worker.pod["metadata"]["namespace"]
                if any((kind, name) in worker.volumes.sources for kind, n, name in sources if n == ns):
                    with contextlib.suppress(Exception):
                        worker.volumes.refresh(worker.pod)
        if self._dns_dirty:
            self._dns_dirty = False
            endpoints.sync(self.api)
            dns.write_table(self.hosts_file, dns.build_table(list(self.api.store.items("/services")),
                                                             list(self.api.store.items("/pods"))))

    def _sync_pod(self, pod: Obj) -> None:
        node = pod["spec"].get("nodeName")
        if node not in self._node_up or not self._node_up[node].is_set():
            return  # a NotReady node's kubelet acts once the node is back (_resync_node)
        uid = pod["metadata"]["uid"]
        if pod["metadata"].get("deletionTimestamp"):
            if uid not in self._terminating:
                self._terminating.add(uid)
                self._spawn(self._terminate(pod))
        elif uid not in self.workers and pod["status"].get("phase") not in _TERMINAL:
            worker = PodWorker(self, pod, self._allocate_ip(uid))
            self.workers[uid] = worker
            worker.start()
        elif uid in self.workers:
            worker = self.workers[uid]
            before = worker.pod["metadata"]
            worker.pod = pod
            if (before.get("labels"), before.get("annotations")) != (pod["metadata"].get("labels"),
                                                                     pod["metadata"].get("annotations")):
                with contextlib.suppress(Exception):  # a bad item is reported when the pod starts, not here
                    worker.volumes.refresh(pod)

    def _resync_node(self, name: str) -> None:
        for pod in self.api.store.items("/pods"):
            if pod["spec"].get("nodeName") == name:
                self._dirty_pods.add((pod["metadata"]["namespace"], pod["metadata"]["name"]))
        self._wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        await asyncio.gather(*(w.terminate(0) for w in self.workers.values()), return_exceptions=True)
        for task in list(self._tasks) + list(self._evictions.values()):
            task.cancel()

    # -- pods --------------------------------------------------------------------------------------------
    def _allocate_ip(self, uid: str) -> str:
        if uid not in self._ips:
            self._ips[uid] = self._released.pop() if self._released else next(self._free_ips)
        return self._ips[uid]

    def _release_ip(self, uid: str) -> None:
        ip = self._ips.pop(uid, None)
        if ip:
            self._released.append(ip)

    async def _terminate(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is not None:
            await worker.terminate(float(pod["metadata"].get("deletionGracePeriodSeconds") or 0))
            failed = any(s.state.get("terminated", {}).get("exitCode", 0) != 0 for s in worker.states.values())
            worker.phase = "Failed" if failed or worker.phase != "Succeeded" else "Succeeded"
            worker.stopping = False
            self.publish(worker)
            self.workers.pop(uid, None)
        self._release_ip(uid)
        rt = self.api.registry.get("", "v1", "pods")
        current = self.api.store.get("/pods", (pod["metadata"]["namespace"], pod["metadata"]["name"]))
        if current is not None and current["metadata"]["uid"] == uid:
            self.api.finish_deletion(rt, current)
        self._terminating.discard(uid)

    async def _stop_forgotten(self, worker: PodWorker) -> None:
        await worker.terminate(0)
        self._release_ip(worker.uid)

    def publish(self, worker: PodWorker) -> None:
        md = worker.pod["metadata"]
        current = self.api.store.get("/pods", (md["namespace"], md["name"]))
        if current is None or current["metadata"]["uid"] != worker.uid:
            return
        if not self._node_up.get(current["spec"].get("nodeName", ""), asyncio.Event()).is_set():
            return  # a NotReady node's kubelet does not report
        status = worker.status()
        previous = {c["type"]: c for c in current["status"].get("conditions") or []}
        for condition in status["conditions"]:
            old = previous.get(condition["type"])
            if old and old.get("status") == condition["status"]:
                condition["lastTransitionTime"] = old.get("lastTransitionTime", condition["lastTransitionTime"])
        status["startTime"] = current["status"].get("startTime", status["startTime"])
        if status == current["status"]:
            return
        new = copy.deepcopy(current)
        new["status"] = status
        self.api.store.put("/pods", new)

    def base_env(self, pod: Obj, ip: str, pod_dir: Path) -> dict[str, str]:
        """The process environment every container starts from (the local environment is the image)."""
        env = dict(os.environ)
        for key in ("KUBECONFIG", "PYTHONPATH", "INTERP_LOCAL_HOSTS", "INTERP_LOCAL_NAMESPACE"):
            env.pop(key, None)
        inherited = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = str(self.hook_dir) + (os.pathsep + inherited if inherited else "")
        # "python", "torchrun" and the project's scripts resolve to the control plane's own environment.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", os.defpath)
        env.update({
            "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
            "POD_IP": ip, "INTERP_LOCAL_POD_DIR": str(pod_dir),
            "INTERP_LOCAL_HOSTS": str(self.hosts_file),
            "INTERP_LOCAL_NAMESPACE": pod["metadata"]["namespace"],
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        })
        if self.config.api_url:
            env["KUBERNETES_SERVICE_PORT"] = self.config.api_url.rsplit(":", 1)[-1]
        if self.config.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.config.kubeconfig)
        return env

    # -- logs --------------------------------------------------------------------------------------------
    async def follow_logs(self, pod: Obj, query: dict[str, str]) -> AsyncIterator[bytes]:
        """``kubectl logs -f``: what the log holds, then new output until the container stops running."""
        text = await self.read_logs(pod, query)
        yield text.encode()
        name = query.get("container") or pod["spec"]["containers"][0]["name"]
        log_path = self._log_dir(pod, name)
        runs = sorted((int(p.stem) for p in log_path.glob("*.log")), reverse=True)
        path = log_path / f"{runs[0]}.log"
        offset = path.stat().st_size
        while True:
            worker = self.workers.get(pod["metadata"]["uid"])
            state = worker.container_state(name) if worker else None
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            if chunk:
                offset += len(chunk)
                yield chunk
            elif state is None or state.process is None or state.log_path != path:
                return
            await asyncio.sleep(0.1)

    def _log_dir(self, pod: Obj, container: str) -> Path:
        md = pod["metadata"]
        return self.config.state_dir / "pods" / md["namespace"] / f"{md['name']}-{md['uid'][:8]}" / "logs" / container

    async def read_logs(self, pod: Obj, query: dict[str, str]) -> str:
        name = query.get("container")
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        init_names = [c["name"] for c in pod["spec"].get("initContainers") or []]
        if not name:
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {pod['metadata']['name']}, choose "
                                  f"one of: [{' '.join(names)}]")
            name = names[0]
        if name not in names + init_names:
            raise bad_request(f"container {name} is not valid for pod {pod['metadata']['name']}")
        md = pod["metadata"]
        log_dir = self._log_dir(pod, name)
        runs = sorted((int(p.stem) for p in log_dir.glob("*.log")), reverse=True) if log_dir.is_dir() else []
        if query.get("previous") == "true":
            runs = runs[1:]
            if not runs:
                raise bad_request(f'previous terminated container "{name}" in pod "{md["name"]}" not found')
        if not runs:
            raise bad_request(f'container "{name}" in pod "{md["name"]}" is waiting to start: ContainerCreating')
        text = (log_dir / f"{runs[0]}.log").read_text(errors="replace")
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]):]) if int(query["tailLines"]) > 0 else ""
        if query.get("limitBytes"):
            text = text[: int(query["limitBytes"])]
        return text
