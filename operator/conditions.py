"""Status conditions as the Kubernetes API conventions define them."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Return ``conditions`` with ``type_`` set; lastTransitionTime changes only when the status does."""
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = previous["lastTransitionTime"] if previous and previous.get("status") == status else None
    updated = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if observed_generation is not None:
        updated["observedGeneration"] = observed_generation
    return [c for c in conditions if c.get("type") != type_] + [updated]
