"""Pure readings of an object's status: is it done, why did it fail, and how it reads to a person."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..api import ApiModel
from ..api.common import Condition

JOB_DONE = ("Succeeded", "Failed")
SERVICE_DONE = ("Ready", "Failed")


class JobFailed(RuntimeError):
    """The object reached phase Failed; ``reason`` and ``message`` come from its status condition."""

    def __init__(self, kind: str, name: str, reason: str, message: str, status: Any = None) -> None:
        super().__init__(f"{kind} {name} failed: {reason}: {message}" if message else f"{kind} {name} failed: {reason}")
        self.kind, self.name, self.reason, self.message, self.status = kind, name, reason, message, status


def condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def failure(status: Any) -> tuple[str, str] | None:
    """(reason, message) of a failed object: its Failed condition, or the refused spec (Accepted=False)."""
    if status is None or status.phase != "Failed":
        return None
    failed = condition(status.conditions, "Failed")
    if failed is not None and failed.status == "True":
        return failed.reason, failed.message
    accepted = condition(status.conditions, "Accepted")
    if accepted is not None and accepted.status == "False":
        return accepted.reason, accepted.message
    ready = condition(status.conditions, "Ready")
    if ready is not None and ready.status == "False":
        return ready.reason, ready.message
    return "Failed", "the status names no reason"


def _fmt_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def fmt_rate(tokens_per_second: float | None) -> str:
    if not tokens_per_second:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if tokens_per_second >= scale:
            return f"{tokens_per_second / scale:.1f}{unit} tok/s"
    return f"{tokens_per_second:.0f} tok/s"


def fmt_eta(eta: datetime | None, now: datetime | None = None) -> str:
    if eta is None:
        return "-"
    now = now or datetime.now(UTC)
    eta = eta if eta.tzinfo else eta.replace(tzinfo=UTC)
    seconds = max(0, int((eta - now).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def sae_rows(status: Any) -> list[dict[str, str]]:
    """The per-SAE metrics of a training job's status as rows of strings (empty for other kinds)."""
    rows = []
    for m in getattr(status, "saes", None) or ():
        rows.append({"SAE": m.name, "STEP": str(m.step), "L0": _fmt_number(m.l0), "FVU": _fmt_number(m.fvu),
                     "EXPL.VAR": _fmt_number(m.explained_variance), "MSE": _fmt_number(m.mse),
                     "DEAD": "-" if m.dead_fraction is None else f"{100 * m.dead_fraction:.1f}%"})
    return rows


def table(rows: Sequence[Mapping[str, str]]) -> str:
    """Rows as columns aligned like ``kubectl get`` prints them."""
    if not rows:
        return ""
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r.get(h, ""))) for r in rows)) for h in headers}
    lines = ["   ".join(h.ljust(widths[h]) for h in headers).rstrip()]
    lines += ["   ".join(str(r.get(h, "")).ljust(widths[h]) for h in headers).rstrip() for r in rows]
    return "\n".join(lines)


def progress_fields(status: Any) -> dict[str, str]:
    """What a progress bar's postfix shows: throughput, ETA, restarts, the first SAE's L0 and FVU."""
    fields: dict[str, str] = {"phase": status.phase}
    progress = getattr(status, "progress", None)
    if progress is not None and progress.tokens_per_second:
        fields["rate"] = fmt_rate(progress.tokens_per_second)
        fields["eta"] = fmt_eta(progress.eta)
    if getattr(status, "restarts", 0):
        fields["restarts"] = str(status.restarts)
    for m in (getattr(status, "saes", None) or ())[:2]:
        fields[m.name] = f"L0={_fmt_number(m.l0, 3)} FVU={_fmt_number(m.fvu, 3)}"
    return fields


def describe(kind: str, name: str, status: Any, now: datetime | None = None) -> str:
    """A status as a short report: phase, progress, checkpoint, per-SAE metrics, failure reason."""
    if status is None:
        return f"{kind} {name}: no status yet (is the operator running?)"
    lines = [f"{kind} {name}: {status.phase}"]
    progress = getattr(status, "progress", None)
    if progress is not None:
        total = f"/{progress.tokens_total:,}" if progress.tokens_total else ""
        lines.append(f"  progress   {bar(progress.percent)} {progress.percent:5.1f}%  "
                     f"{progress.tokens_done:,}{total} tokens  {fmt_rate(progress.tokens_per_second)}  "
                     f"ETA {fmt_eta(progress.eta, now)}")
    for label, value in _details(status):
        lines.append(f"  {label:<10} {value}")
    rows = sae_rows(status)
    if rows:
        lines.append("")
        lines.extend("  " + line for line in table(rows).splitlines())
    failed = failure(status)
    if failed is not None:
        lines.append(f"  failure    {failed[0]}: {failed[1]}")
    return "\n".join(lines)


def _details(status: Any) -> list[tuple[str, str]]:
    details: list[tuple[str, str]] = []
    if getattr(status, "world_size", None):
        details.append(("world", str(status.world_size)))
    details.append(("replicas", f"{status.ready_replicas} ready of {status.replicas}"))
    details.append(("restarts", f"{status.restarts} (attempt {status.attempt})"))
    checkpoint = getattr(status, "last_checkpoint", None)
    if checkpoint is not None:
        where = f" at {checkpoint.path}" if checkpoint.path else ""
        details.append(("checkpoint", f"step {checkpoint.step}, {checkpoint.tokens:,} tokens{where}"))
    if getattr(status, "shards_total", None):
        details.append(("shards", f"{status.shards_done}/{status.shards_total}, {status.bytes_written:,} bytes"))
    if getattr(status, "manifest", None):
        details.append(("manifest", status.manifest))
    if getattr(status, "url", None):
        details.append(("url", status.url))
    placement = getattr(status, "placement", None)
    if placement is not None and placement.nodes:
        domain = f" ({placement.topology_key}={placement.domain})" if placement.domain else ""
        details.append(("nodes", ", ".join(placement.nodes) + domain))
    return details


def bar(percent: float, width: int = 24) -> str:
    filled = round(width * min(max(percent, 0.0), 100.0) / 100)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def to_json(model: ApiModel | None) -> Any:
    return None if model is None else model.to_json_dict()
