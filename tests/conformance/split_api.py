"""One API endpoint in front of two servers: custom resources and CRDs from the real API server, everything else
(core/v1 pods, nodes, events, config maps) from interp-local.

The real server is k8s.io/apiextensions-apiserver, which serves no core/v1; the operator watches pods and nodes, and
kopf holds every handler until those watches have listed once. Behind this proxy the operator talks to one cluster
whose custom-resource semantics (admission, status subresource, finalizers, generations) are the real server's.
Requests and watch streams pass through unchanged; only the group discovery list (/apis) is merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web
from conformance_kube import kubeconfig_client

REAL_GROUPS = ("interp.dev", "apiextensions.k8s.io")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
              "authorization"}


@dataclass(frozen=True)
class Backend:
    server: str
    token: str
    tls: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Backend:
        return cls(*kubeconfig_client(path))


def _backend_for(path: str, real: Backend, local: Backend) -> Backend:
    parts = path.split("/")
    return real if len(parts) > 2 and parts[1] == "apis" and parts[2] in REAL_GROUPS else local


class SplitApi:
    def __init__(self, real: Backend, local: Backend):
        self.real, self.local = real, local
        self.session: aiohttp.ClientSession | None = None

    async def _send(self, backend: Backend, request: web.Request, **extra: str) -> aiohttp.ClientResponse:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers |= extra | {"Authorization": f"Bearer {backend.token}"}
        # No body, no data: an empty body would carry Content-Type application/octet-stream, which the real server
        # answers with 406 even on a GET.
        body = await request.read()
        return await self.session.request(request.method, backend.server + request.path_qs, headers=headers,
                                          data=body or None, ssl=backend.tls,
                                          timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def groups(self, request: web.Request) -> web.Response:
        """/apis: the local plane's groups with the real server's in place of theirs."""
        lists = []
        for backend in (self.real, self.local):
            async with await self._send(backend, request, Accept="application/json") as response:
                lists.append(await response.json())
        real_groups = [g for g in lists[0]["groups"] if g["name"] in REAL_GROUPS]
        local_groups = [g for g in lists[1]["groups"] if g["name"] not in REAL_GROUPS]
        return web.json_response({**lists[1], "groups": local_groups + real_groups})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        backend = _backend_for(request.path, self.real, self.local)
        async with await self._send(backend, request) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():  # watch events as they arrive
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionError, aiohttp.ClientError):
                pass  # the client closed its watch, or the proxy is stopping: the stream just ends
            return response

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_get("/apis", self.groups)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app


@contextlib.contextmanager
def split_api(real_kubeconfig: Path, local_kubeconfig: Path, kubeconfig_out: Path) -> Iterator[Path]:
    """Serve the split API on 127.0.0.1 (plain HTTP, no auth: tests only) and yield a kubeconfig for it."""
    proxy = SplitApi(Backend.from_kubeconfig(real_kubeconfig), Backend.from_kubeconfig(local_kubeconfig))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, object] = {}

    async def start() -> None:
        proxy.session = aiohttp.ClientSession()
        runner = web.AppRunner(proxy.app(), shutdown_timeout=1.0)  # open watches are cut, not awaited
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, name="split-api", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    started.wait(30)
    kubeconfig_out.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "split",
        "clusters": [{"name": "split", "cluster": {"server": f"http://127.0.0.1:{state['port']}"}}],
        "users": [{"name": "split", "user": {}}],
        "contexts": [{"name": "split", "context": {"cluster": "split", "user": "split"}}],
    }))
    try:
        yield kubeconfig_out
    finally:
        async def stop() -> None:
            assert proxy.session is not None
            await proxy.session.close()  # ends the open watch streams first, so that the server stops at once
            await state["runner"].cleanup()  # type: ignore[attr-defined]

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
