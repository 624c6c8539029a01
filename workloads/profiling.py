"""Profiling on demand: a torch.profiler trace of the steps named by the pod's ``interp.dev/profile-steps``.

The operator copies that annotation from the job onto its running pods; a downwardAPI volume exposes the pod's
annotations as a file (``/etc/interp/podinfo/annotations``, one ``key="Go-quoted value"`` per line) that the kubelet
refreshes within a minute. :class:`StepProfiler` re-reads it every few seconds from the training or dump loop and
captures the requested window once, as a Chrome trace in the output directory. Nothing here may crash the workload:
a bad value or a failing profiler is logged and ignored.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANNOTATION = "interp.dev/profile-steps"
DEFAULT_PODINFO_DIR = "/etc/interp/podinfo"

_STEPS = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
_GO_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.DOTALL)
_GO_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def parse_steps(value: str) -> tuple[int, int]:
    """``"100-110"`` → (100, 110), steps 100 to 109; ``"7"`` → (7, 8)."""
    match = _STEPS.fullmatch(value)
    if match is None:
        raise ValueError(f"{ANNOTATION} must be a step or a range START-END (END exclusive), got {value!r}")
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) is not None else start + 1
    if end <= start:
        raise ValueError(f"{ANNOTATION} {value!r}: the end must be greater than the start")
    return start, end


def read_annotations(path: Path) -> dict[str, str]:
    """The annotations in a downwardAPI ``metadata.annotations`` file; {} when it does not exist."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    annotations = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _go_unquote(value[1:-1])
        annotations[key.strip()] = value
    return annotations


def _go_unquote(body: str) -> str:
    """Undo Go's %q escaping (the kubelet writes each value with it); \\x and octal escapes are raw bytes."""
    out = bytearray()
    position = 0
    for match in _GO_ESCAPE.finditer(body):
        out += body[position:match.start()].encode()
        code = match.group(1)
        if code[0] == "x" and len(code) == 3:
            out.append(int(code[1:], 16))
        elif code[0] in "uU" and len(code) > 1:
            out += chr(int(code[1:], 16)).encode()
        elif len(code) == 3 and code.isdigit():
            out.append(int(code, 8) & 0xFF)
        else:
            out += _GO_SIMPLE_ESCAPES.get(code, code).encode()
        position = match.end()
    out += body[position:].encode()
    return out.decode("utf-8", errors="replace")


@dataclass
class _Capture:
    window: tuple[int, int]
    profiler: Any
    first_step: int
    last_step: int
    marker: Any = None


class StepProfiler:
    """Capture a torch.profiler trace of the steps that ``interp.dev/profile-steps`` names, once per window.

    Call :meth:`step` at the start of every step, before its work, and :meth:`close` at the end. The trace of
    steps ``start`` to ``end - 1`` is written to ``output_dir/profile-{name}-steps-{start}-{end}.json``; the name
    always gives the steps it holds (a window first seen after its start begins at the current step, and one cut
    short by :meth:`close` ends after the last step seen).
    """

    def __init__(self, output_dir: Path, *, annotations_path: Path | None = None, name: str = "rank0",
                 check_every_s: float = 5.0, logger: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        if annotations_path is None:
            annotations_path = Path(os.environ.get("INTERP_PODINFO_DIR") or DEFAULT_PODINFO_DIR) / "annotations"
        if logger is None:
            from interp_operator.logs import get_logger

            logger = get_logger("interp_workloads.profiling")
        self.output_dir = Path(output_dir)
        self.annotations_path = Path(annotations_path)
        self.name = name
        self.check_every_s = check_every_s
        self._log = logger
        self._clock = clock
        self._last_check: float | None = None
        self._window: tuple[int, int] | None = None
        self._handled: set[tuple[int, int]] = set()
        self._warned: set[str] = set()
        self._capture: _Capture | None = None

    def step(self, step: int) -> None:
        now = self._clock()
        if self._last_check is None or now - self._last_check >= self.check_every_s:
            self._last_check = now
            self._refresh_window()
        capture = self._capture
        if capture is not None:
            self._end_marker(capture)
            if step < capture.window[1]:
                capture.last_step = step
                self._begin_marker(capture, step)
                return
            self._capture = None
            self._finish(capture)
        window = self._window
        if window is None or window in self._handled or step < window[0]:
            return
        self._handled.add(window)
        start, end = window
        if step >= end:
            self._log.warning("profile window already over; not captured", window=f"{start}-{end}", step=step)
            return
        if step > start:
            self._log.info("profile window start already passed; capturing from this step", window=f"{start}-{end}",
                           step=step)
        self._start(window, step)

    def close(self) -> None:
        """Stop and write a capture still running (its file names the steps it actually holds)."""
        capture, self._capture = self._capture, None
        if capture is not None:
            self._end_marker(capture)
            self._finish(capture)

    def _refresh_window(self) -> None:
        try:
            value = read_annotations(self.annotations_path).get(ANNOTATION, "").strip()
        except Exception as err:
            self._warn_once(f"read:{err}", "cannot read the pod's annotations; profiling on demand is off",
                            path=str(self.annotations_path), error=str(err))
            self._window = None
            return
        if not value:
            self._window = None
            return
        try:
            self._window = parse_steps(value)
        except ValueError as err:
            self._warn_once(f"value:{value}", "ignoring an invalid profile annotation", value=value, error=str(err))
            self._window = None

    def _warn_once(self, key: str, message: str, **fields: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._log.warning(message, **fields)

    def _start(self, window: tuple[int, int], step: int) -> None:
        try:
            import torch
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(ProfilerActivity.CUDA)
            profiler = profile(activities=activities, record_shapes=True)
            profiler.start()
        except Exception as err:
            self._log.warning("cannot start the profiler; window skipped", window=f"{window[0]}-{window[1]}",
                              error=f"{type(err).__name__}: {err}")
            return
        self._capture = _Capture(window=window, profiler=profiler, first_step=step, last_step=step)
        self._begin_marker(self._capture, step)
        self._log.info("profiling started", window=f"{window[0]}-{window[1]}", step=step)

    @staticmethod
    def _begin_marker(capture: _Capture, step: int) -> None:
        from torch.profiler import record_function

        capture.marker = record_function(f"step {step}")
        capture.marker.__enter__()

    @staticmethod
    def _end_marker(capture: _Capture) -> None:
        if capture.marker is not None:
            capture.marker.__exit__(None, None, None)
            capture.marker = None

    def _finish(self, capture: _Capture) -> None:
        path = self.output_dir / f"profile-{self.name}-steps-{capture.first_step}-{capture.last_step + 1}.json"
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            capture.profiler.stop()
            self.output_dir.mkdir(parents=True, exist_ok=True)
            capture.profiler.export_chrome_trace(str(temporary))
            os.replace(temporary, path)
        except Exception as err:
            with contextlib.suppress(OSError):
                temporary.unlink()
            self._log.warning("cannot write the profile", path=str(path), error=f"{type(err).__name__}: {err}")
            return
        self._log.info("profile written", path=str(path), steps=f"{capture.first_step}-{capture.last_step + 1}")
