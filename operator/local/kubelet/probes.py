"""Probe execution (exec, httpGet, tcpSocket) with the real thresholds and periods."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

Obj = dict[str, Any]


def _port(container: Obj, port: Any) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"probe port {port!r} is not a number nor a named container port")


async def run_probe(probe: Obj, container: Obj, pod_ip: str, env: dict[str, str], cwd: str | None,
                    argv_rewrite: Any) -> bool:
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "exec" in probe:
            argv = [argv_rewrite(a) for a in probe["exec"].get("command") or []]
            proc = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            try:
                return await asyncio.wait_for(proc.wait(), timeout) == 0
            except TimeoutError:
                os.killpg(proc.pid, 9)
                await proc.wait()
                return False
        if "httpGet" in probe:
            spec = probe["httpGet"]
            host = spec.get("host") or pod_ip
            scheme = spec.get("scheme", "HTTP").lower()
            url = f"{scheme}://{host}:{_port(container, spec['port'])}{spec.get('path', '/')}"
            headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
            client_timeout = aiohttp.ClientTimeout(total=timeout)
            async with aiohttp.ClientSession(timeout=client_timeout) as session, \
                    session.get(url, headers=headers, ssl=False, allow_redirects=False) as response:
                return 200 <= response.status < 400
        if "tcpSocket" in probe:
            host = probe["tcpSocket"].get("host") or pod_ip
            port = _port(container, probe["tcpSocket"]["port"])
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
            return True
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError):
        return False
    raise ValueError("a probe needs exec, httpGet or tcpSocket (grpc probes are not supported by interp-local)")


class Prober:
    """Runs one probe periodically; ``state`` flips after failure/success thresholds."""

    def __init__(self, probe: Obj, check: Any, on_change: Any, initial: bool, once: bool = False):
        """``once``: a startup probe, which reports its first success or its failure, then stops."""
        self.probe = probe
        self.once = once
        self.check = check
        self.on_change = on_change
        self.state = initial
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        await asyncio.sleep(float(self.probe.get("initialDelaySeconds", 0)))
        period = float(self.probe.get("periodSeconds", 10))
        failure_threshold = int(self.probe.get("failureThreshold", 3))
        success_threshold = int(self.probe.get("successThreshold", 1))
        successes = failures = 0
        while True:
            ok = await self.check(self.probe)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if not self.state and successes >= success_threshold:
                self.state = True
                self.on_change(True)
                if self.once:
                    return
            elif (self.state or self.once) and failures >= failure_threshold:
                self.state = False
                self.on_change(False)
                if self.once:
                    return
            await asyncio.sleep(period)
