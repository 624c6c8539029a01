"""Spec validation for objects the API server already accepted: pure functions from an object to its status patch.

The API server enforces the CRD schema and CEL rules, but an object stored under an older CRD, or edited while the
CRD was being upgraded, can still reach the operator. Such an object gets Accepted=False with the validation message
and phase Failed — never a crash loop.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic

from .api import KindInfo
from .conditions import set_condition


def validation_message(error: pydantic.ValidationError) -> str:
    """One line per problem, `field: message`, with camelCase field paths as users wrote them."""
    lines = []
    for problem in error.errors():
        path = ""
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path or '(object)'}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def admission_status(info: KindInfo, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The status fields to write after validating ``body``: phase and the Accepted condition."""
    generation = body.get("metadata", {}).get("generation")
    status = dict(body.get("status") or {})
    try:
        info.parse({**body, "status": None})
    except pydantic.ValidationError as error:
        conditions = set_condition(
            status.get("conditions", []), "Accepted", "False", "InvalidSpec", validation_message(error), generation, now
        )
        return {"phase": "Failed", "conditions": conditions, "observedGeneration": generation}
    conditions = set_condition(
        status.get("conditions", []), "Accepted", "True", "SpecValid", "the spec is valid", generation, now
    )
    return {"phase": status.get("phase", "Pending"), "conditions": conditions, "observedGeneration": generation}
