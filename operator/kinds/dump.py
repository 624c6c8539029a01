"""ActivationDump: the adapter, and the status from what its pods say (pure).

Live progress comes from the ranks' ``GET /progress`` reports: shardsDone, tokensDone and bytesWritten there are
store-wide counts as each rank sees the shared output directory, so the largest is the freshest, and a count the
status already shows is never taken back (a restarted rank reports from scratch). Throughput is the sum of the
running ranks' own rates. The final result is rank 0's termination message, written once the manifest is verified.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..api import ActivationDump, kind_info
from ..api.common import StorageRef
from ..gang.builders import Mount
from ..gang.lifecycle import TIME_FORMAT, Policy
from ..gang.pods import PodState
from ..snapshot import Snapshot
from .base import Adapter, mount

STATUS_PORT = 9400
"""Where the ranks serve ``GET /progress``."""
MANIFEST = "manifest.json"
MAX_ETA_S = 10 * 365 * 24 * 3600.0
"""Beyond this an ETA says nothing (a stalled rank); the status leaves it out."""
SNIPPET_CHARS = 200


def count(value: Any) -> int | None:
    """A non-negative integer from a report, or None (missing or garbled: JSON from a pod is not trusted)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def rate(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def largest(reports: Iterable[Mapping[str, Any]], key: str) -> int | None:
    values = [v for r in reports if (v := count(r.get(key))) is not None]
    return max(values) if values else None


def running_rates(reports: Mapping[str, Mapping[str, Any]], running: Collection[str]) -> list[float]:
    """The tokensPerSecond of each running pod that reports one."""
    return [r for name in running if name in reports if (r := rate(reports[name].get("tokensPerSecond"))) is not None]


def token_progress(progress: Mapping[str, Any], done: int, total: int, rates: list[float],
                   now: datetime) -> dict[str, Any]:
    """``progress`` with tokensDone, tokensTotal, percent and, when the pods report rates, their sum and the ETA."""
    # Every defaulted field is written, so that the stored status (defaulted by the API server) equals the next one.
    out = dict(progress) | {"tokensDone": done, "tokensTotal": total,
                            "percent": min(100.0, round(100 * done / total, 2)) if total else 0.0}
    if rates:
        speed = sum(rates)
        out["tokensPerSecond"] = round(speed, 1)
        remaining_s = (total - done) / speed if total > done and speed > 0 else None
        if remaining_s is not None and remaining_s <= MAX_ETA_S:
            eta = now.replace(tzinfo=None) + timedelta(seconds=remaining_s)
            out["eta"] = eta.strftime(TIME_FORMAT)
        else:
            out.pop("eta", None)
    return out


DUMP_STAGES = ("start", "extract", "shuffle", "verify", "done")


def gang_stage(reports: Mapping[str, Mapping[str, Any]], running: Iterable[str], order: Sequence[str]) -> str | None:
    """The stage of the least advanced running rank (the gang is there until every rank has moved on)."""
    stages = [reports[name].get("stage") for name in running if name in reports]
    known = [stage for stage in stages if stage in order]
    return min(known, key=order.index) if known else None


def apply_progress(status: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]], running: Collection[str],
                   now: datetime) -> dict[str, Any]:
    """``status`` with shardsDone, shardsTotal, bytesWritten and progress updated from the ranks' reports.

    ``reports`` maps pod names to their last good report; ``running`` names the pods of the current attempt that
    are running, whose rates make up the throughput. Without reports the status is returned unchanged.
    """
    out = dict(status)
    if not reports:
        return out
    seen = list(reports.values())
    progress = dict(status.get("progress") or {})
    for key in ("shardsDone", "bytesWritten"):
        out[key] = max(count(status.get(key)) or 0, largest(seen, key) or 0)
    shards_total = largest(seen, "shardsTotal") or count(status.get("shardsTotal"))
    if shards_total is not None:
        out["shardsTotal"] = shards_total
    done = max(count(progress.get("tokensDone")) or 0, largest(seen, "tokensDone") or 0)
    total = largest(seen, "tokensTotal") or count(progress.get("tokensTotal")) or 0
    out["progress"] = token_progress(progress, done, total, running_rates(reports, running), now)
    stage = gang_stage(reports, running, DUMP_STAGES)
    if stage is not None:
        out["stage"] = stage
    return out


def read_result(pods: Iterable[PodState]) -> tuple[dict[str, Any] | None, str | None]:
    """Rank 0's termination message as ``(result, None)`` when it reports a verified store, else ``(None, why)``."""
    rank0 = next((p for p in pods if p.rank == 0), None)
    if rank0 is None:
        return None, "there is no pod of rank 0 to report the store"
    who = f"rank 0 (pod {rank0.name})"
    if not rank0.message:
        return None, f"{who} left no termination message, so the store was not verified"
    snippet = rank0.message[:SNIPPET_CHARS]
    try:
        result = json.loads(rank0.message)
    except ValueError:
        return None, f"{who} left a termination message that is not JSON: {snippet!r}"
    if not isinstance(result, dict) or result.get("verified") is not True:
        return None, f"{who} did not report a verified store: {snippet}"
    return result, None


def verify_store(pods: tuple[PodState, ...]) -> str | None:
    """The ActivationDump's success check (``Policy.verify_success``): why the store is not verified, or None."""
    return read_result(pods)[1]


def manifest_location(output: StorageRef, name: str = MANIFEST) -> str:
    """Where manifest.json is, in the terms of spec.output: ``pvc://CLAIM/SUBPATH/manifest.json`` or ``URI/...``."""
    if output.claim_name:
        parts = [output.claim_name, (output.sub_path or "").strip("/"), name]
        return "pvc://" + "/".join(p for p in parts if p)
    return f"{(output.uri or '').rstrip('/')}/{name}"


def _manifest_name(value: Any) -> str:
    """The manifest's file name from the message, when it is a plain relative path inside the store."""
    if isinstance(value, str) and value and not value.startswith("/") and ".." not in value.split("/"):
        return value
    return MANIFEST


def apply_result(status: Mapping[str, Any], result: Mapping[str, Any], output: StorageRef) -> dict[str, Any]:
    """``status`` of a succeeded dump: where the manifest is, what the store holds, complete counts, no ETA."""
    out = dict(status)
    out["manifest"] = manifest_location(output, _manifest_name(result.get("manifest")))
    hook_points = result.get("hookPoints")
    summary = {
        "hookPoints": hook_points if isinstance(hook_points, list) and all(isinstance(h, str) for h in hook_points)
        else None,
        "dModel": count(result.get("dModel")),
        "dtype": result.get("dtype") if isinstance(result.get("dtype"), str) else None,
        "tokens": count(result.get("tokens")),
    }
    out["summary"] = {k: v for k, v in summary.items() if v is not None}
    shards, written, tokens = (count(result.get(k)) for k in ("shards", "bytes", "tokens"))
    if shards is not None:
        out["shardsDone"] = out["shardsTotal"] = shards
    if written is not None:
        out["bytesWritten"] = written
    # Nothing runs any more: no throughput, no ETA.
    progress = {k: v for k, v in (status.get("progress") or {}).items() if k not in ("eta", "tokensPerSecond")}
    if tokens is not None:
        progress |= {"tokensDone": tokens, "tokensTotal": tokens}
    out["progress"] = progress | {"percent": 100.0}
    out["stage"] = "done"
    return out


class ActivationDumpAdapter(Adapter):
    def sizes(self, obj: ActivationDump) -> tuple[int, int, int]:
        return obj.spec.parallelism, obj.spec.parallelism, obj.spec.parallelism

    def policy(self, obj: ActivationDump) -> Policy:
        # Exit code 0 is not enough: the store counts only once rank 0 says its manifest verified.
        return dataclasses.replace(super().policy(obj), verify_success=verify_store)

    def present_status(self, obj: ActivationDump, status: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
        """Shards, bytes and token progress from the ranks' reports; the manifest and summary once succeeded."""
        status = super().present_status(obj, status, snapshot)
        current = [p for p in snapshot.pods if p.attempt == status.get("attempt")]
        phase = status.get("phase")
        if phase == "Succeeded":
            result, _ = read_result(current)
            return apply_result(status, result, obj.spec.output) if result else status
        if phase == "Failed":
            return status
        running = {p.name for p in current if p.phase == "Running" and not p.deleting}
        return apply_progress(status, snapshot.reports, running, snapshot.now)

    def mounts(self, obj: ActivationDump) -> tuple[Mount, ...]:
        spec = obj.spec
        return (*mount("model", spec.model.storage), *mount("dataset", spec.dataset.source),
                *mount("output", spec.output, writes=True))


def adapter() -> ActivationDumpAdapter:
    return ActivationDumpAdapter(kind_info("ActivationDump"), "interp_workloads.dump", True, True, True,
                                 status_port=STATUS_PORT)
