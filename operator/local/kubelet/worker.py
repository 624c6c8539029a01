"""One pod on one node: init containers, containers with restarts, probes, status, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...logs import get_logger
from .. import meta
from .env import EnvError, PathMap, build_env, expand
from .probes import Prober, run_probe
from .termination import container_path, message_file, read_message
from .volumes import PodVolumes, VolumeError

if TYPE_CHECKING:
    from .kubelet import Kubelet

Obj = dict[str, Any]
_log = get_logger("interp_operator.local.kubelet")


@dataclass
class ContainerState:
    name: str
    init: bool
    image: str = ""
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    def status(self) -> Obj:
        out = {"name": self.name, "image": self.image, "imageID": "", "restartCount": self.restart_count,
               "ready": self.ready, "started": self.started, "state": self.state, "lastState": self.last_state}
        return out


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: Obj, ip: str):
        self.kubelet = kubelet
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.ip = ip
        md = pod["metadata"]
        self.pod_dir = kubelet.config.state_dir / "pods" / md["namespace"] / f"{md['name']}-{self.uid[:8]}"
        self.volumes = PodVolumes(pod, self.pod_dir, kubelet.config.state_dir, kubelet.api.store.get)
        spec = pod["spec"]
        self.init_states = [ContainerState(c["name"], True, c.get("image", "")) for c in
                            spec.get("initContainers") or []]
        self.states = {c["name"]: ContainerState(c["name"], False, c.get("image", "")) for c in
                       spec.get("containers") or []}
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.initialized = not self.init_states
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self._deadline: asyncio.Task[None] | None = None
        self._probers: dict[str, list[Prober]] = {}
        self._started_at = meta.now()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pod-{self.pod['metadata']['name']}")
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline:
            self._deadline = asyncio.create_task(self._enforce_deadline(float(deadline)))

    async def _enforce_deadline(self, seconds: float) -> None:
        """activeDeadlineSeconds: past it the pod's containers are stopped and the pod fails."""
        await asyncio.sleep(seconds)
        if self.phase in ("Succeeded", "Failed") or self.stopping:
            return
        self.event("DeadlineExceeded", "Pod was active on the node longer than the specified deadline", "Warning")
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        await self.terminate(grace)
        self.stopping = False
        self.phase, self.reason = "Failed", "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        self.publish()

    async def _run(self) -> None:
        try:
            await self._setup_volumes()
            self.publish()
            for container, state in zip(self.pod["spec"].get("initContainers") or [], self.init_states, strict=True):
                if not await self._run_init(container, state):
                    return
            self.initialized = True
            runners = [asyncio.create_task(self._run_container(c, self.states[c["name"]]))
                       for c in self.pod["spec"].get("containers") or []]
            await asyncio.gather(*runners)
            if not self.stopping:
                failed = any(s.state.get("terminated", {}).get("exitCode", 0) != 0 for s in self.states.values())
                self.phase = "Failed" if failed else "Succeeded"
                self.publish()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("pod worker failed", pod=self.pod["metadata"]["name"])
            raise

    async def _setup_volumes(self) -> None:
        delay = 0.2
        while True:
            try:
                self.volumes.setup()
                return
            except VolumeError as exc:
                for state in [*self.init_states, *self.states.values()]:
                    state.state = {"waiting": {"reason": "ContainerCreating", "message": str(exc)}}
                self.message = str(exc)
                self.publish()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _run_init(self, container: Obj, state: ContainerState) -> bool:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while True:
            code = await self._run_once(container, state)
            if self.stopping:
                return False
            if code == 0:
                return True
            if policy == "Never":
                self.phase = "Failed"
                self.publish()
                return False
            await self._back_off(state, "Init:CrashLoopBackOff")

    async def _run_container(self, container: Obj, state: ContainerState) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while True:
            code = await self._run_once(container, state)
            if self.stopping:
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                return
            await self._back_off(state, "CrashLoopBackOff")

    async def _back_off(self, state: ContainerState, reason: str) -> None:
        await self.kubelet.node_up(self.pod["spec"]["nodeName"])
        if self.stopping:
            return
        delay = min(self.kubelet.config.restart_backoff * (2 ** state.restart_count),
                    self.kubelet.config.max_restart_backoff)
        state.last_state = {"terminated": state.state.get("terminated", {})}
        state.restart_count += 1
        state.state = {"waiting": {"reason": reason, "message": f"back-off {delay:g}s restarting failed container="
                                   f"{state.name} pod={self.pod['metadata']['name']}"}}
        self.publish()
        self.event("BackOff", f"Back-off restarting failed container {state.name} in pod "
                   f"{self.pod['metadata']['name']}", "Warning")
        await asyncio.sleep(delay)

    # -- one container run -------------------------------------------------------------------------------
    def _environment(self, container: Obj, message: Path) -> tuple[list[str], dict[str, str], str | None, PathMap]:
        mounts = PathMap(self.volumes.mounts(container), files={container_path(container): str(message)})
        pod = copy.deepcopy(self.kubelet.api.store.get("/pods", (self.pod["metadata"]["namespace"],
                                                                   self.pod["metadata"]["name"])) or self.pod)
        pod.setdefault("status", {})["podIP"] = self.ip
        pod["status"]["podIPs"] = [{"ip": self.ip}]
        node = self.kubelet.api.store.get("/nodes", ("", pod["spec"]["nodeName"])) or {}
        base = self.kubelet.base_env(pod, self.ip, self.pod_dir)
        env = build_env(pod, container, base, self.kubelet.api.store.get,
                        (node.get("status") or {}).get("allocatable") or {})
        env = {k: (v if base.get(k) == v else mounts.rewrite(v)) for k, v in env.items()}
        command = [expand(a, env) for a in container.get("command") or []]
        args = [expand(a, env) for a in container.get("args") or []]
        if not command:
            raise EnvError("interp-local runs containers as local processes and ignores images: the container "
                           "must set a command")
        argv = [mounts.rewrite(a) for a in command + args]
        cwd = mounts.local(container["workingDir"]) if container.get("workingDir") else str(self.pod_dir)
        return argv, env, cwd, mounts

    async def _run_once(self, container: Obj, state: ContainerState) -> int:
        await self.kubelet.node_up(self.pod["spec"]["nodeName"])
        message = message_file(self.pod_dir, state.name, state.restart_count)
        try:
            argv, env, cwd, mounts = self._environment(container, message)
            if cwd:
                Path(cwd).mkdir(parents=True, exist_ok=True)
        except (EnvError, VolumeError) as exc:
            state.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self.publish()
            await asyncio.sleep(self.kubelet.config.restart_backoff)
            return 1 if not self.stopping else 0
        log_dir = self.pod_dir / "logs" / state.name
        log_dir.mkdir(parents=True, exist_ok=True)
        state.log_path = log_dir / f"{state.restart_count}.log"
        try:
            with open(state.log_path, "ab") as log:
                state.process = await asyncio.create_subprocess_exec(
                    *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True)
        except OSError as exc:
            state.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc),
                                          "startedAt": meta.now(), "finishedAt": meta.now()}}
            self.publish()
            return 128
        started_at = meta.now()
        state.state = {"running": {"startedAt": started_at}}
        self.event("Started", f"Started container {state.name}")
        self._start_probes(container, state, env, cwd, mounts)
        self.phase = "Running" if self.initialized else self.phase
        self.publish()
        code = await state.process.wait()
        self._stop_probes(state.name)
        state.ready = False
        state.started = False
        exit_code = code if code >= 0 else 128 + (-code)
        reason = "Completed" if exit_code == 0 else "Error"
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": meta.now(),
                      "containerID": f"process://{state.process.pid}"}
        text = read_message(container, message, state.log_path, exit_code)
        if text:
            terminated["message"] = text
        state.state = {"terminated": terminated}
        state.process = None
        self.publish()
        return exit_code

    def _start_probes(self, container: Obj, state: ContainerState, env: dict[str, str], cwd: str | None,
                      mounts: PathMap) -> None:
        async def check(probe: Obj) -> bool:
            return await run_probe(probe, container, self.ip, env, cwd, mounts.rewrite)

        readiness = container.get("readinessProbe")
        liveness = container.get("livenessProbe")
        startup = container.get("startupProbe")
        if not (readiness and not state.init):
            state.ready = not state.init and not startup
        state.started = not startup

        def start_others() -> None:
            probers = []
            if readiness and not state.init:
                probers.append(Prober(readiness, check, lambda ok: self._readiness_changed(state, ok),
                                      initial=False))
            elif not state.init:
                state.ready = True
            if liveness:
                probers.append(Prober(liveness, check, lambda ok: None if ok else self._liveness_failed(state),
                                      initial=True))
            for prober in probers:
                prober.start()
            self._probers.setdefault(state.name, []).extend(probers)

        if not startup:
            start_others()
            return

        def started(ok: bool) -> None:
            # A startup probe runs until it first succeeds; readiness and liveness wait for it.
            if ok:
                state.started = True
                start_others()
                self.publish()
            else:
                self.event("Unhealthy", f"Startup probe failed for container {state.name}", "Warning")
                self.signal(state.name, signal.SIGKILL)

        prober = Prober(startup, check, started, initial=False, once=True)
        prober.start()
        self._probers[state.name] = [prober]

    def _stop_probes(self, name: str) -> None:
        for prober in self._probers.pop(name, []):
            prober.stop()

    def _readiness_changed(self, state: ContainerState, ready: bool) -> None:
        if not ready:
            self.event("Unhealthy", f"Readiness probe failed for container {state.name}", "Warning")
        if state.ready != ready:
            state.ready = ready
            self.publish()

    def _liveness_failed(self, state: ContainerState) -> None:
        self.event("Unhealthy", f"Liveness probe failed for container {state.name}", "Warning")
        self.event("Killing", f"Container {state.name} failed liveness probe, will be restarted")
        self.signal(state.name, signal.SIGKILL)

    def event(self, reason: str, message: str, kind: str = "Normal") -> None:
        self.kubelet.recorder.event(self.pod, reason, message, kind)

    # -- signals and termination -------------------------------------------------------------------------
    def signal(self, container: str | None, sig: int) -> int:
        hit = 0
        for state in [*self.init_states, *self.states.values()]:
            if (container is None or state.name == container) and state.process is not None \
                    and state.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(state.process.pid, sig)
                    hit += 1
        return hit

    def container_state(self, name: str) -> ContainerState | None:
        return next((s for s in [*self.init_states, *self.states.values()] if s.name == name), None)

    def running(self) -> bool:
        return any(s.process is not None and s.process.returncode is None
                   for s in [*self.init_states, *self.states.values()])

    async def terminate(self, grace: float) -> None:
        """SIGTERM every container, SIGKILL whatever still runs after ``grace`` seconds."""
        self.stopping = True
        for state in [*self.init_states, *self.states.values()]:
            if state.process is not None and state.process.returncode is None:
                self.event("Killing", f"Stopping container {state.name}")
        self.signal(None, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.running():
            self.signal(None, signal.SIGKILL)
            while self.running():
                await asyncio.sleep(0.02)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self._deadline is not None and self._deadline is not asyncio.current_task():
            self._deadline.cancel()
        for name in list(self._probers):
            self._stop_probes(name)

    # -- status ------------------------------------------------------------------------------------------
    def status(self) -> Obj:
        now = meta.now()
        ready = self.initialized and all(s.ready for s in self.states.values()) and self.phase == "Running"
        containers_ready = self.initialized and all(s.ready for s in self.states.values())

        def cond(kind: str, ok: bool, reason: str = "") -> Obj:
            out = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now}
            if reason and not ok:
                out["reason"] = reason
            return out

        conditions = [
            cond("PodReadyToStartContainers", True), cond("Initialized", self.initialized, "ContainersNotInitialized"),
            cond("Ready", ready, "ContainersNotReady"), cond("ContainersReady", containers_ready, "ContainersNotReady"),
            cond("PodScheduled", True),
        ]
        status: Obj = {"phase": self.phase, "conditions": conditions, "hostIP": "127.0.0.1",
                       "hostIPs": [{"ip": "127.0.0.1"}], "podIP": self.ip, "podIPs": [{"ip": self.ip}],
                       "startTime": self._started_at, "qosClass": self.pod["status"].get("qosClass", "BestEffort"),
                       "containerStatuses": [s.status() for s in self.states.values()]}
        if self.init_states:
            status["initContainerStatuses"] = [s.status() for s in self.init_states]
        if self.message and self.phase in ("Pending", "Failed"):
            status["message"] = self.message
        if self.reason:
            status["reason"] = self.reason
        return status

    def publish(self) -> None:
        self.kubelet.publish(self)
