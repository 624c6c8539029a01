"""What one reconcile sees of the cluster: the object's pods, the nodes, what others hold, the pods' reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .gang.placement import NodeInfo
from .gang.pods import PodState
from .quantity import ResourceMap


@dataclass(frozen=True)
class Snapshot:
    """What the reconcile sees of the cluster (from the operator's watch caches)."""

    pods: tuple[PodState, ...]
    """This object's pods."""
    nodes: tuple[NodeInfo, ...]
    used: Mapping[str, ResourceMap]
    """Resources per node held by every other pod (bound, or reserved by a planned gang)."""
    now: datetime
    reports: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The last good progress report (``GET /progress``) of each pod that serves one, by pod name."""
    related: Mapping[tuple[str, str], Mapping[str, Any] | None] = field(default_factory=dict)
    """The objects this one references (``Adapter.references``) by (kind, name): spec and status, None if absent."""
