"""Live progress from the workload: poll each running pod's status endpoint (``GET http://POD_IP:PORT/progress``).

A pod that does not answer in time, refuses, or answers with something other than a JSON object simply has no fresh
report; its last good one is kept until the pod is gone. What the reports mean is the adapters' business.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from .gang.pods import PodState

POLL_TIMEOUT_S = 2.0
POLL_CONCURRENCY = 32
MAX_REPORT_BYTES = 64 * 1024

Report = dict[str, Any]


def progress_url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/progress"


async def fetch_reports(pods: Iterable[PodState], port: int, timeout_s: float = POLL_TIMEOUT_S,
                        concurrency: int = POLL_CONCURRENCY) -> dict[str, Report]:
    """The reports of the running pods that answered well, by pod name (at most ``concurrency`` requests at once)."""
    targets = [p for p in pods if p.phase == "Running" and p.ip and not p.deleting]
    if not targets:
        return {}
    limit = asyncio.Semaphore(concurrency)
    # Pod IPs are reached directly: a proxy from the operator's environment must not be used (trust_env=False).
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False) as session:

        async def fetch(pod: PodState) -> tuple[str, Report] | None:
            assert pod.ip is not None
            async with limit:
                try:
                    async with session.get(progress_url(pod.ip, port)) as response:
                        if response.status != 200:
                            return None
                        body = await response.content.read(MAX_REPORT_BYTES + 1)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    return None
            if len(body) > MAX_REPORT_BYTES:
                return None
            try:
                report = json.loads(body)
            except ValueError:
                return None
            return (pod.name, report) if isinstance(report, dict) else None

        answers = await asyncio.gather(*(fetch(p) for p in targets))
    return dict(a for a in answers if a is not None)


class ProgressBoard:
    """The last good report of each pod of one object, refreshed before each of its reconciles."""

    def __init__(self, port: int, timeout_s: float = POLL_TIMEOUT_S, concurrency: int = POLL_CONCURRENCY) -> None:
        self.port, self.timeout_s, self.concurrency = port, timeout_s, concurrency
        self.reports: dict[str, Report] = {}

    async def refresh(self, pods: Iterable[PodState]) -> Mapping[str, Report]:
        pods = tuple(pods)
        present = {p.name for p in pods}
        fresh = await fetch_reports(pods, self.port, self.timeout_s, self.concurrency)
        self.reports = {name: r for name, r in self.reports.items() if name in present} | fresh
        return dict(self.reports)
