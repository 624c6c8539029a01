"""What the lifecycle needs to know about an observed pod, read once from the API object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import naming


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

    @property
    def failed(self) -> bool:
        return self.phase == "Failed"

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

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
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
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
        )
