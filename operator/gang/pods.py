"""What the lifecycle needs to know about an observed pod, read once from the API object."""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import naming

MAX_REASON_CHARS = 1024
"""How much of a pod's own account of a failure reaches a condition and an event (the recorder's own limit)."""


def _log_tail_reason(tail: str) -> str:
    """The lines of a log's tail that may say why it stopped: JSON progress records (a killed process's last words)
    say nothing, and a JSON error record is shown as its event and error."""
    kept = []
    for line in tail.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            kept.append(line)
        elif record.get("level") in ("warning", "error", "critical"):
            kept.append(": ".join(str(record[k]) for k in ("event", "error", "exception") if record.get(k)))
    return "\n".join(line for line in kept if line.strip()).strip()


def exit_detail(exit_code: int) -> str:
    """``exit code 137 (SIGKILL)``: a shell reports death by signal N as 128 + N."""
    if 128 < exit_code < 128 + signal.NSIG:
        try:
            return f"exit code {exit_code} ({signal.Signals(exit_code - 128).name})"
        except ValueError:
            pass
    return f"exit code {exit_code}"


@dataclass(frozen=True)
class PodState:
    name: str
    attempt: int
    rank: int
    phase: str
    ready: bool = False
    node: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    deleting: bool = False
    profile: str | None = None
    """The pod's copy of the profiling annotation."""
    ip: str | None = None
    """status.podIP: where the workload's status endpoint answers."""
    message: str | None = None
    """The workload container's termination message (what it wrote to its terminationMessagePath)."""
    unschedulable: str | None = None
    """Why the scheduler does not bind the pod (its PodScheduled=False message), e.g. a claim that does not exist."""
    revision: str | None = None
    """Revision of the spec the pod was made from (independent replicas only; see :mod:`.rollout`)."""

    @property
    def failed(self) -> bool:
        return self.phase == "Failed"

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def failure_text(self) -> str:
        """What the failed workload said: the ``error: message`` of its JSON termination message, or the tail of
        the text there (the kubelet puts the log's tail there when the process wrote nothing); "" if nothing."""
        text = (self.message or "").strip()
        if not text:
            return ""
        try:
            said = json.loads(text)
        except ValueError:
            said = None
        if isinstance(said, dict) and "event" not in said:  # a termination message; one with an event is a log line
            parts = [str(said[k]) for k in ("error", "message") if said.get(k)]
            text = ": ".join(parts) if parts else text
        else:
            text = _log_tail_reason(text)
        if len(text) > MAX_REASON_CHARS:  # the end of a log says most about why it stopped
            text = "..." + text[-(MAX_REASON_CHARS - 3):]
        return text

    @classmethod
    def from_api(cls, pod: Mapping[str, Any]) -> PodState:
        meta, status = pod["metadata"], pod.get("status", {})
        labels = meta.get("labels", {})
        exit_code, reason, message = None, status.get("reason"), None
        for container in status.get("containerStatuses", []):
            terminated = container.get("state", {}).get("terminated")
            if container.get("name") == "workload" and terminated:
                exit_code = terminated.get("exitCode")
                reason = terminated.get("reason") or reason
                message = terminated.get("message") or None
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        unschedulable = next((c.get("message") or c.get("reason") or "unschedulable" for c in conditions
                              if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)
        return cls(
            name=meta["name"],
            attempt=int(labels.get(naming.LABEL_ATTEMPT, -1)),
            rank=int(labels.get(naming.LABEL_RANK, -1)),
            phase=status.get("phase", "Pending"),
            ready=ready,
            node=pod.get("spec", {}).get("nodeName"),
            exit_code=exit_code,
            reason=reason,
            deleting=bool(meta.get("deletionTimestamp")),
            profile=(meta.get("annotations") or {}).get(naming.PROFILE_ANNOTATION),
            ip=status.get("podIP") or None,
            message=message,
            unschedulable=unschedulable,
            revision=labels.get(naming.LABEL_REVISION),
        )
