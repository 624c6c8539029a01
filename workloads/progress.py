"""Progress of a workload, for a person at a terminal and for the operator.

:class:`ProgressReporter` draws a tqdm bar on a terminal and writes a structured ``progress`` log line every few
seconds otherwise (a pod's log, or logs forced to JSON). :class:`StatusServer` answers the operator's polls over HTTP
(``/progress``, ``/healthz``, ``/metrics``), and :func:`write_termination_message` leaves a short JSON summary where
Kubernetes copies it into the pod's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from interp_operator.httpthread import BackgroundHTTPServer, QuietHandler
from interp_operator.logs import get_logger, renders_json

RATE_WINDOW_S = 30.0
# Updates closer together than this share one rate sample, so the window holds at most ~60 samples.
RATE_RESOLUTION_S = 0.5
TERMINATION_MESSAGE_LIMIT = 4096
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class ProgressReporter:
    """Counts units done; shows a bar on a TTY, else logs ``progress`` at most every ``log_every_s`` seconds."""

    def __init__(self, *, unit: str = "tok", total: int | None = None, log_every_s: float = 10.0,
                 stream: TextIO | None = None, logger: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.unit = unit
        self.total = total
        self.log_every_s = log_every_s
        self._clock = clock
        self._done = 0
        self._fields: dict[str, Any] = {}
        self._closed = False
        started = clock()
        self._last_log = started
        self._samples: deque[tuple[float, int]] = deque([(started, 0)])
        # The status server's thread reads the rate while the workload's thread updates it.
        self._lock = threading.Lock()
        stream = stream if stream is not None else sys.stderr
        isatty = getattr(stream, "isatty", None)
        self._bar: Any = None
        # One format per log: a bar on a terminal, but never among JSON log lines (forced on a terminal) it shares.
        among_json = stream is sys.stderr and renders_json()
        if isatty is not None and isatty() and not among_json:
            from tqdm import tqdm

            # disable=False: the TQDM_DISABLE that JSON logging sets for other libraries is not meant for this bar.
            self._bar = tqdm(total=total, unit=unit, unit_scale=True, file=stream, dynamic_ncols=True,
                             disable=False)
        elif logger is None:
            logger = get_logger("interp_workloads.progress")
        self._logger = logger

    @property
    def done(self) -> int:
        return self._done

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, n: int, **fields: Any) -> None:
        """Add ``n`` units done; ``fields`` (latest value wins) go into the log line or the bar's postfix."""
        now = self._clock()
        with self._lock:
            self._done += n
            self._fields.update(fields)
            if len(self._samples) >= 2 and now - self._samples[-2][0] < RATE_RESOLUTION_S:
                self._samples[-1] = (now, self._done)
            else:
                self._samples.append((now, self._done))
            self._prune(now)
        if self._bar is not None:
            if fields:
                self._bar.set_postfix(self._fields, refresh=False)
            self._bar.update(n)
        elif now - self._last_log >= self.log_every_s:
            self._log(now)

    def rate(self) -> float:
        """Units per second over the last ~30 s (0.0 before any progress)."""
        with self._lock:
            return self._rate_at(self._clock())

    def _rate_at(self, now: float) -> float:
        self._prune(now)
        since, done_then = self._samples[0]
        if now <= since:
            return 0.0
        return (self._done - done_then) / (now - since)

    def _prune(self, now: float) -> None:
        """Keep one sample at or before the window's start (the baseline) and those after it."""
        while len(self._samples) >= 2 and self._samples[1][0] <= now - RATE_WINDOW_S:
            self._samples.popleft()

    def snapshot(self) -> dict[str, Any]:
        """What the log line says: done, total, percent, rate, eta_s and the latest fields."""
        with self._lock:
            rate = self._rate_at(self._clock())
            done, fields = self._done, dict(self._fields)
        percent = eta = None
        if self.total:
            percent = round(100.0 * done / self.total, 2)
            if rate > 0:
                eta = round(max(self.total - done, 0) / rate, 1)
        return {"done": done, "total": self.total, "percent": percent, "rate": round(rate, 3), "eta_s": eta, **fields}

    def _log(self, now: float) -> None:
        self._last_log = now
        self._logger.info("progress", **self.snapshot())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._log(self._clock())


class StatusServer(BackgroundHTTPServer):
    """A small HTTP server in a daemon thread: ``GET /progress`` (JSON of ``report()``), ``/healthz``, ``/metrics``."""

    thread_name = "interp-status-server"
    poll_interval_s = 0.05

    def __init__(self, report: Callable[[], dict[str, Any]], *, host: str, port: int,
                 metrics: Callable[[], str] | None = None) -> None:
        super().__init__(host, port)
        self._report = report
        self._metrics = metrics

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        report, metrics = self._report, self._metrics

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/healthz":
                    self.send(200, b"ok")
                elif path == "/progress":
                    self._send_computed(lambda: json.dumps(report(), default=str).encode(), "application/json")
                elif path == "/metrics" and metrics is not None:
                    self._send_computed(lambda: metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self.refuse(404, f"no such endpoint {path}")

            def refuse(self, status: int, message: str, **headers: str) -> None:
                self.send(status, json.dumps({"error": message}).encode(), "application/json", **headers)

            def _send_computed(self, body: Callable[[], bytes], content_type: str) -> None:
                try:
                    payload = body()
                except Exception as err:
                    self.refuse(500, f"{type(err).__name__}: {err}")
                    return
                self.send(200, payload, content_type)

        return Handler


def status_server_from_env(report: Callable[[], dict[str, Any]],
                           metrics: Callable[[], str] | None = None) -> StatusServer | None:
    """Start a :class:`StatusServer` on ``$INTERP_STATUS_PORT`` (host ``$POD_IP`` or all interfaces), if set.

    A port that cannot be bound is logged and the workload goes on without the server: progress in the object's
    status is a convenience, the work is not.
    """
    raw = os.environ.get("INTERP_STATUS_PORT", "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"INTERP_STATUS_PORT must be a port number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"INTERP_STATUS_PORT must be within 0-65535, got {port}")
    host = os.environ.get("POD_IP") or "0.0.0.0"
    try:
        return StatusServer(report, host=host, port=port, metrics=metrics).start()
    except OSError as err:
        get_logger("interp_workloads.progress").warning("status server not started", host=host, port=port,
                                                        error=str(err))
        return None


def write_termination_message(data: dict[str, Any]) -> None:
    """Write ``data`` as compact JSON to the pod's termination message file; a no-op where there is none.

    Raises ValueError when the JSON exceeds Kubernetes' 4096-byte limit; never raises for I/O (a standalone run has
    no writable ``/dev/termination-log``).
    """
    payload = json.dumps(data, separators=(",", ":")).encode()
    if len(payload) > TERMINATION_MESSAGE_LIMIT:
        raise ValueError(f"termination message is {len(payload)} bytes; the limit is {TERMINATION_MESSAGE_LIMIT}")
    path = Path(os.environ.get("INTERP_TERMINATION_MESSAGE_PATH") or DEFAULT_TERMINATION_MESSAGE_PATH)
    if not path.parent.is_dir():
        return
    with contextlib.suppress(OSError), open(path, "wb") as handle:
        handle.write(payload)
