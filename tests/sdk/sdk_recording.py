"""Recorded API exchanges: a transport that records what a real API server answers, and one that replays it.

Requests are matched on method, path and query (less the parameters that differ run to run: resourceVersion,
timeoutSeconds); repeated requests get the recorded answers in order, and the last one again once they run out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from interp_operator.sdk.transport import JSON, REQUEST_TIMEOUT_S, ApiError, NotFound, raise_for_status

RECORDED = Path(__file__).parent / "recorded"
VOLATILE = {"resourceVersion", "timeoutSeconds"}


def key(method: str, path: str, params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in sorted((params or {}).items()) if k not in VOLATILE)
    return f"{method} {path}" + (f"?{query}" if query else "")


class RecordingTransport:
    """Passes every call to ``inner`` and keeps the exchange."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.namespace = inner, inner.namespace
        self.exchanges: list[dict[str, Any]] = []

    @property
    def api_client(self) -> Any:
        return self.inner.api_client

    def request(self, method: str, path: str, *, params=None, body=None, content_type: str = JSON,
                timeout: float | None = REQUEST_TIMEOUT_S) -> Any:
        try:
            answer = self.inner.request(method, path, params=params, body=body, content_type=content_type,
                                        timeout=timeout)
        except ApiError as err:
            self.exchanges.append({"key": key(method, path, params), "status": err.status, "body": err.body})
            raise
        self.exchanges.append({"key": key(method, path, params), "status": 200, "body": answer})
        return answer

    @contextmanager
    def stream(self, path: str, *, params=None, timeout: float | None = None) -> Iterator[Iterator[bytes]]:
        lines: list[str] = []
        self.exchanges.append({"key": key("GET", path, params), "status": 200, "lines": lines})
        with self.inner.stream(path, params=params, timeout=timeout) as source:
            def tee() -> Iterator[bytes]:
                for line in source:
                    lines.append(line.decode())
                    yield line
            yield tee()

    def save(self, name: str) -> Path:
        RECORDED.mkdir(exist_ok=True)
        path = RECORDED / f"{name}.json"
        path.write_text(json.dumps({"namespace": self.namespace, "exchanges": self.exchanges}, indent=1) + "\n")
        return path


class ReplayTransport:
    """Answers from a recording; a request that was never recorded fails the test with its key."""

    api_client = None

    def __init__(self, name: str) -> None:
        recording = json.loads((RECORDED / f"{name}.json").read_text())
        self.namespace = recording["namespace"]
        self.answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for exchange in recording["exchanges"]:
            self.answers[exchange["key"]].append(exchange)
        self.calls: list[tuple[str, Any]] = []

    def _next(self, request_key: str) -> dict[str, Any]:
        queue = self.answers.get(request_key)
        if not queue:
            raise AssertionError(f"no recorded answer for {request_key}; recorded: {sorted(self.answers)}")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def request(self, method: str, path: str, *, params=None, body=None, content_type: str = JSON,
                timeout: float | None = REQUEST_TIMEOUT_S) -> Any:
        self.calls.append((key(method, path, params), body))
        answer = self._next(key(method, path, params))
        if answer["status"] != 200:
            raise_for_status(answer["status"], json.dumps(answer["body"]).encode())
        return answer["body"]

    @contextmanager
    def stream(self, path: str, *, params=None, timeout: float | None = None) -> Iterator[Iterator[bytes]]:
        self.calls.append((key("GET", path, params), None))
        answer = self._next(key("GET", path, params))
        yield iter([line.encode() for line in answer["lines"]])


__all__ = ["NotFound", "RecordingTransport", "ReplayTransport"]
