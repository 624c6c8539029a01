"""The progress poller against real HTTP servers on loopback addresses: good, refusing, garbage, slow."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from interp_operator.gang.pods import PodState
from interp_operator.progress import ProgressBoard, fetch_reports, progress_url

REPORT = {"rank": 0, "worldSize": 3, "stage": "extract", "shardsDone": 5, "shardsTotal": 12, "tokensDone": 1234,
          "tokensTotal": 5000, "bytesWritten": 123, "tokensPerSecond": 456.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answer(text: str, status: int = 200):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text, status=status, content_type="application/json")

    return handler


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response(REPORT)


# pod IP -> what its status endpoint does (no entry: nothing listens, the connection is refused)
SERVERS = {
    "127.0.0.1": answer(json.dumps(REPORT)),
    "127.0.0.2": answer("<html>not json</html>"),
    "127.0.0.4": answer(json.dumps([REPORT])),
    "127.0.0.5": answer(json.dumps(REPORT), status=503),
    "127.0.0.6": slow,
}


class Endpoints:
    """The SERVERS, each on its own loopback address and all on one port, as pods on their own IPs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runners: dict[str, web.AppRunner] = {}

    async def __aenter__(self) -> Endpoints:
        for ip, handler in SERVERS.items():
            await self.start(ip, handler)
        return self

    async def start(self, ip, handler) -> None:
        app = web.Application()
        app.router.add_get("/progress", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, ip, self.port).start()
        self.runners[ip] = runner

    async def stop(self, ip: str) -> None:
        await self.runners.pop(ip).cleanup()

    async def __aexit__(self, *exc) -> None:
        for ip in list(self.runners):
            await self.stop(ip)


def pod(last_octet: int, phase: str = "Running", **fields) -> PodState:
    fields.setdefault("ip", f"127.0.0.{last_octet}")
    return PodState(f"d-1-{last_octet}", 1, last_octet, phase, **fields)


def test_only_good_answers_of_running_pods_count():
    async def scenario():
        async with Endpoints() as endpoints:
            pods = [pod(1), pod(2), pod(3), pod(4), pod(5), pod(6), pod(7, ip=None),
                    PodState("pending", 1, 8, "Pending", ip="127.0.0.1"),
                    PodState("going", 1, 9, "Running", ip="127.0.0.1", deleting=True)]
            loop = asyncio.get_running_loop()
            started = loop.time()
            reports = await fetch_reports(pods, endpoints.port, timeout_s=0.5)
            return reports, loop.time() - started

    reports, elapsed = asyncio.run(scenario())
    assert reports == {"d-1-1": REPORT}
    assert elapsed < 2  # the slow pod costs one timeout, not the whole poll


def test_board_keeps_the_last_good_report_until_the_pod_is_gone():
    async def scenario():
        async with Endpoints() as endpoints:
            board = ProgressBoard(endpoints.port, timeout_s=0.5)
            first = await board.refresh([pod(1), pod(3)])
            await endpoints.stop("127.0.0.1")
            await endpoints.start("127.0.0.3", answer(json.dumps(REPORT | {"rank": 3})))
            silent = await board.refresh([pod(1), pod(3)])
            gone = await board.refresh([pod(3)])
            return first, silent, gone

    first, silent, gone = asyncio.run(scenario())
    assert first == {"d-1-1": REPORT}
    assert silent == {"d-1-1": REPORT, "d-1-3": REPORT | {"rank": 3}}
    assert gone == {"d-1-3": REPORT | {"rank": 3}}


def test_no_running_pods_means_no_requests():
    assert asyncio.run(fetch_reports([pod(1, "Succeeded"), pod(2, "Pending")], free_port())) == {}


@pytest.mark.parametrize(("ip", "url"), [
    ("10.1.2.3", "http://10.1.2.3:9400/progress"),
    ("fd00::7", "http://[fd00::7]:9400/progress"),
])
def test_progress_url(ip, url):
    assert progress_url(ip, 9400) == url
