"""Termination messages: what a container wrote to its terminationMessagePath, or the tail of its log.

A process cannot write to the container path (``/dev/termination-log``) on this machine, so each run of a container
gets a file of its own in the pod's directory, and the kubelet maps the container path to it (``PathMap`` files);
after the run it reads the file into ``state.terminated.message`` as the real kubelet does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_PATH = "/dev/termination-log"
MESSAGE_LIMIT = 4096
"""Bytes of the file that become the message (the kubelet's MaxContainerTerminationMessageLength)."""
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048
"""FallbackToLogsOnError: the last 80 lines of the log, of which at most the last 2048 bytes."""


def container_path(container: dict[str, Any]) -> str:
    return str(container.get("terminationMessagePath") or DEFAULT_PATH)


def message_file(pod_dir: Path, container: str, run: int) -> Path:
    """A fresh, empty file for one run of a container (a restarted container starts without a message)."""
    path = pod_dir / "termination" / container / str(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _head(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(limit)
    except OSError:
        return b""


def _log_tail(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(size - FALLBACK_BYTES, 0))
            tail = handle.read()
    except OSError:
        return b""
    return b"".join(tail.splitlines(keepends=True)[-FALLBACK_LINES:])


def read_message(container: dict[str, Any], message: Path, log: Path | None, exit_code: int) -> str:
    """The container's termination message after a run that ended with ``exit_code`` ("" when there is none)."""
    data = _head(message, MESSAGE_LIMIT)
    fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code != 0
    if not data and fallback and log is not None:
        data = _log_tail(log)
    return data.decode(errors="replace")
