"""The engine's thread: it owns the model, steps the batch, and runs other model work between decode steps.

Forward captures, attributions and vector checks install hooks on the same model as generation, so they run on
this thread too (as jobs queued between two decode steps) and never see another request's hooks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from interp_operator import logs

from .engine import Engine, GenerationRequest, TokenEvent
from .metrics import Metrics

T = TypeVar("T")
log = logs.get_logger(__name__)


class Worker:
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._wake = threading.Condition()
        self._inbox: list[GenerationRequest] = []
        self._jobs: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, request: GenerationRequest) -> None:
        with self._wake:
            self._inbox.append(request)
            self._wake.notify()

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the engine thread between two decode steps."""
        future: Future[T] = Future()
        with self._wake:
            self._jobs.append((fn, future))
            self._wake.notify()
        return future

    def queue_depth(self) -> int:
        return len(self._inbox) + len(self.engine.waiting)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._inbox or self._jobs or self.engine.busy):
                    self._wake.wait()
                if self._stopping:
                    return
                arrived, self._inbox = self._inbox, []
                jobs, self._jobs = self._jobs, []
            for request in arrived:
                self.engine.submit(request)
            for fn, future in jobs:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as error:  # handed to the waiting request
                        future.set_exception(error)
            if self.engine.busy:
                self._step()

    def _step(self) -> None:
        start = time.perf_counter()
        batch = len(self.engine.rows)
        try:
            made = self.engine.step()
        except Exception:  # a failed step must not stop the server
            log.exception("decode step failed; the batch's requests end with an error")
            self._fail_all()
            return
        self.metrics.observe_step(max(batch, len(self.engine.rows)), made, time.perf_counter() - start,
                                  self.queue_depth())

    def _fail_all(self) -> None:
        engine = self.engine
        for request in [*(r.request for r in engine.rows), *engine.waiting]:
            request.on_event(TokenEvent(None, "", finish_reason="error"))
        engine.rows, engine.waiting, engine.cache = [], [], None
