"""Assembly of the local control plane: store, API, controllers, HTTP server (and later nodes/kubelet).

``ControlPlane`` runs on an asyncio loop; ``ControlPlane.in_thread()`` runs one on a background thread for
tests and tools that are synchronous.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .api import Api
from .controllers import Controllers
from .kubelet import Kubelet, KubeletConfig
from .nodes import NodeConfig
from .scheduler import Scheduler
from .server import ApiServer
from .store import Store
from .tls import ServingCerts, generate


@dataclass
class PlaneConfig:
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = field(default_factory=lambda: secrets.token_urlsafe(24))
    history_window: int = 20000
    bookmark_interval: float = 60.0
    watch_timeout: float = 1800.0
    state_dir: Path | None = None
    nodes: list[NodeConfig] = field(default_factory=lambda: [NodeConfig("node-0")])
    # Run pods as processes (scheduler + kubelet); False serves the API only.
    run_pods: bool = True
    restart_backoff: float = 1.0
    eviction_seconds: float = 30.0
    # Pods are processes in the host's network namespace, each with its own loopback address from this range: planes
    # running side by side on one machine need different ranges, or their pods' ports collide.
    pod_network: str = "127.1.0.0/16"
    # HTTPS with a generated CA (kubectl sends tokens only over TLS); False serves plain HTTP without auth.
    tls: bool = True


class ControlPlane:
    def __init__(self, config: PlaneConfig | None = None):
        self.config = config or PlaneConfig()
        if not self.config.tls:
            self.config.token = None
        self.certs: ServingCerts | None = generate(self.config.host) if self.config.tls else None
        # A state dir made here is removed on stop; one given in the config is kept (logs, volumes).
        self._owns_state_dir = self.config.state_dir is None
        self.state_dir = self.config.state_dir or Path(tempfile.mkdtemp(prefix="interp-local-"))
        self.api = Api(Store(history_window=self.config.history_window))
        self.server = ApiServer(self.api, self.config.token, self.config.bookmark_interval,
                                self.config.watch_timeout)
        self.controllers: Controllers | None = None
        self.scheduler: Scheduler | None = None
        self.kubelet: Kubelet | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.port = self.config.port
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.certs else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.controllers = Controllers(self.api)
        self._tasks.append(asyncio.create_task(self.controllers.run(), name="interp-local-controllers"))
        self._runner = web.AppRunner(self.server.app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        context = self.certs.ssl_context(self.state_dir / "pki") if self.certs else None
        site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=1024, ssl_context=context)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port when port 0 was asked
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self.config.run_pods:
            pods_kubeconfig = self.write_kubeconfig(self.state_dir / "kubeconfig")
            self.scheduler = Scheduler(self.api)
            self.kubelet = Kubelet(self.api, KubeletConfig(
                state_dir=self.state_dir, nodes=list(self.config.nodes), api_url=self.url,
                kubeconfig=pods_kubeconfig, restart_backoff=self.config.restart_backoff,
                eviction_seconds=self.config.eviction_seconds, pod_network=self.config.pod_network))
            self.server.kubelet = self.kubelet
            self._tasks.append(asyncio.create_task(self.scheduler.run(), name="interp-local-scheduler"))
            self._tasks.append(asyncio.create_task(self.kubelet.run(), name="interp-local-kubelet"))

    async def stop(self) -> None:
        if self.kubelet is not None:
            await self.kubelet.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def kubeconfig(self) -> dict[str, Any]:
        user: dict[str, Any] = {"token": self.config.token} if self.config.token else {}
        cluster: dict[str, Any] = {"server": self.url}
        if self.certs:
            cluster["certificate-authority-data"] = base64.b64encode(self.certs.ca_pem).decode()
        return {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "interp-local", "cluster": cluster}],
            "users": [{"name": "interp-local", "user": user}],
            "contexts": [{"name": "interp-local", "context": {"cluster": "interp-local", "user": "interp-local",
                                                             "namespace": "default"}}],
            "current-context": "interp-local",
        }

    def write_kubeconfig(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the plane's loop from another thread (fault injection, inspection in tests)."""
        if self.loop is None:
            raise RuntimeError("the control plane is not running")

        async def invoke() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result(timeout=30)

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, config: PlaneConfig | None = None) -> Iterator[ControlPlane]:
        plane = cls(config)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(plane.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(plane.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="interp-local", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        try:
            yield plane
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
