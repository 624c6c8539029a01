"""SAETrainingJob: the adapter, the wait on the referenced ActivationDump, and the status from what the pods say.

Data: ``data.activationDump`` names an ActivationDump of the same namespace. The first gang starts only once it has
Succeeded (until then the job is Pending with ``DataReady=False`` naming it and why); its ``spec.output`` is then
mounted read-only into every pod as the ``activations`` storage. ``data.store`` names a store directly.

Live progress comes from the ranks' ``GET /progress`` reports of the current attempt: tokensDone there is the gang's
count (every rank steps together), so a restarted gang shows where it resumed from; per-SAE metrics and the last
checkpoint come from the report furthest along. The final result is rank 0's termination message, written once every
export verified; only then is the job Succeeded.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..api import SAETrainingJob, kind_info
from ..api.common import StorageRef, WorkerSpec
from ..conditions import set_condition
from ..gang.builders import Mount
from ..gang.lifecycle import Policy
from ..gang.pods import PodState
from ..snapshot import Snapshot
from .base import Adapter, Hold, mount
from .dump import count, gang_stage, largest, manifest_location, running_rates, token_progress

STATUS_PORT = 9400
"""Where the ranks serve ``GET /progress``."""
STORE_ROLE = "activations"
DATA_READY = "DataReady"
TRAIN_STAGES = ("start", "train", "export", "downstream", "done")
SNIPPET_CHARS = 200
_METRICS = ("l0", "fvu", "explainedVariance", "mse")
_FRACTIONS = ("deadFraction", "denseFraction")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def sae_metrics(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-SAE metrics of a report in the status schema (garbled entries and values are left out)."""
    out = []
    for entry in report.get("saes") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        item: dict[str, Any] = {"name": entry["name"], "step": count(entry.get("step")) or 0}
        for key in _METRICS:
            if (value := _finite(entry.get(key))) is not None:
                item[key] = value
        for key in _FRACTIONS:
            if (value := _finite(entry.get(key))) is not None and 0 <= value <= 1:
                item[key] = value
        if (skipped := count(entry.get("skippedSteps"))) is not None:
            item["skippedSteps"] = skipped
        out.append(item)
    return out


def checkpoint_status(report: Mapping[str, Any], output: StorageRef) -> dict[str, Any] | None:
    written = report.get("lastCheckpoint")
    if not isinstance(written, Mapping):
        return None
    step, tokens = count(written.get("step")), count(written.get("tokens"))
    if step is None or tokens is None:
        return None
    out: dict[str, Any] = {"step": step, "tokens": tokens}
    if isinstance(written.get("time"), str):
        out["time"] = written["time"]
    path = written.get("path")
    if isinstance(path, str) and path and not path.startswith("/") and ".." not in path.split("/"):
        out["path"] = manifest_location(output, path)
    return out


def apply_progress(status: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]], current: Iterable[str],
                   running: Iterable[str], output: StorageRef, now: Any) -> dict[str, Any]:
    """``status`` with progress, saes and lastCheckpoint from the reports of the current attempt's pods."""
    out = dict(status)
    seen = [reports[name] for name in current if name in reports]
    if not seen:
        return out
    progress = dict(status.get("progress") or {})
    done = largest(seen, "tokensDone") or 0
    total = largest(seen, "tokensTotal") or count(progress.get("tokensTotal")) or 0
    running = list(running)
    out["progress"] = token_progress(progress, done, total, running_rates(reports, running), now)
    stage = gang_stage(reports, running, TRAIN_STAGES)
    if stage is not None:
        out["stage"] = stage
    furthest = max(seen, key=lambda r: count(r.get("step")) or 0)
    metrics = sae_metrics(furthest)
    if metrics:
        out["saes"] = metrics
    checkpoints = [c for r in seen if (c := checkpoint_status(r, output)) is not None]
    if checkpoints:
        out["lastCheckpoint"] = max(checkpoints, key=lambda c: c["step"])
    return out


def read_result(pods: Iterable[PodState]) -> tuple[dict[str, Any] | None, str | None]:
    """Rank 0's termination message as ``(result, None)`` when it reports verified exports, else ``(None, why)``."""
    rank0 = next((p for p in pods if p.rank == 0), None)
    if rank0 is None:
        return None, "there is no pod of rank 0 to report the exports"
    who = f"rank 0 (pod {rank0.name})"
    if not rank0.message:
        return None, f"{who} left no termination message, so the exports were not verified"
    snippet = rank0.message[:SNIPPET_CHARS]
    try:
        result = json.loads(rank0.message)
    except ValueError:
        return None, f"{who} left a termination message that is not JSON: {snippet!r}"
    if not isinstance(result, dict) or result.get("verified") is not True:
        return None, f"{who} did not report verified exports: {snippet}"
    return result, None


def verify_exports(pods: tuple[PodState, ...]) -> str | None:
    """The SAETrainingJob's success check (``Policy.verify_success``): why the exports are not verified, or None."""
    return read_result(pods)[1]


def apply_result(status: Mapping[str, Any], result: Mapping[str, Any], output: StorageRef) -> dict[str, Any]:
    """``status`` of a succeeded job: where the exports are, complete progress, no throughput or ETA."""
    out = dict(status)
    out["exports"] = manifest_location(output, "").rstrip("/")
    progress = {k: v for k, v in (status.get("progress") or {}).items() if k not in ("eta", "tokensPerSecond")}
    tokens = count(result.get("tokens"))
    if tokens is not None:
        progress |= {"tokensDone": tokens, "tokensTotal": tokens}
    out["progress"] = {"tokensDone": 0, "tokensTotal": 0} | progress | {"percent": 100.0}
    out["stage"] = "done"
    return out


def dump_hold(name: str, namespace: str, dump: Mapping[str, Any] | None) -> Hold | None:
    """Why the job waits on ActivationDump ``name``, or None once it has Succeeded."""
    if dump is None:
        return Hold(DATA_READY, "ActivationDumpNotFound",
                    f"waiting for ActivationDump {name!r}: it does not exist in namespace {namespace!r}")
    status = dump.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Succeeded":
        return None
    if phase == "Failed":
        failed: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Failed"), {})
        why = f": {failed.get('message')}" if failed.get("message") else ""
        return Hold(DATA_READY, "ActivationDumpFailed",
                    f"waiting for ActivationDump {name!r}: it Failed{why}; fix or recreate it", retry_s=15.0)
    return Hold(DATA_READY, "ActivationDumpNotReady", f"waiting for ActivationDump {name!r}: it is {phase}")


class SAETrainingJobAdapter(Adapter):
    def sizes(self, obj: SAETrainingJob) -> tuple[int, int, int]:
        gang = obj.spec.gang
        return gang.min_replicas or gang.replicas, gang.replicas, gang.max_replicas or gang.replicas

    def worker(self, obj: SAETrainingJob) -> WorkerSpec:
        return obj.spec.gang

    def references(self, body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        name = ((body.get("spec") or {}).get("data") or {}).get("activationDump", {}).get("name")
        return (("ActivationDump", name),) if isinstance(name, str) else ()

    def prepare(self, obj: SAETrainingJob, snapshot: Snapshot) -> SAETrainingJob | Hold:
        """With data.activationDump: wait until it Succeeded, then read its store (its spec.output)."""
        ref = obj.spec.data.activation_dump
        if ref is None:
            return obj
        dump = snapshot.related.get(("ActivationDump", ref.name))
        hold = dump_hold(ref.name, obj.metadata.get("namespace", ""), dump)
        if hold is not None:
            return hold
        assert dump is not None
        output = StorageRef.model_validate((dump.get("spec") or {}).get("output") or {})
        data = obj.spec.data.model_copy(update={"store": output.model_copy(update={"read_only": True})})
        return obj.model_copy(update={"spec": obj.spec.model_copy(update={"data": data})})

    def mounts(self, obj: SAETrainingJob) -> tuple[Mount, ...]:
        spec = obj.spec
        dataset = spec.data.on_the_fly.dataset.source if spec.data.on_the_fly else None
        return (*mount("model", spec.model.storage), *mount("dataset", dataset),
                *mount(STORE_ROLE, spec.data.store), *mount("output", spec.output, writes=True))

    def config(self, obj: Any, size: int, attempt: int) -> dict[str, Any]:
        config = super().config(obj, size, attempt)
        data = config["spec"]["data"]
        if "activationDump" in data and "store" in data:  # resolved: the pods read the dump's store
            config["spec"]["data"] = {"store": data["store"]}
            config["activationDump"] = data["activationDump"]["name"]
        return config

    def policy(self, obj: SAETrainingJob) -> Policy:
        # Exit code 0 is not enough: the job counts only once rank 0 says every export verified.
        return dataclasses.replace(super().policy(obj), verify_success=verify_exports)

    def present_status(self, obj: SAETrainingJob, status: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
        status = super().present_status(obj, status, snapshot)
        ref = obj.spec.data.activation_dump
        if ref is not None and obj.spec.data.store is not None:
            status["conditions"] = set_condition(status.get("conditions", []), DATA_READY, "True",
                                                 "ActivationDumpSucceeded",
                                                 f"reading the store of ActivationDump {ref.name!r}",
                                                 status.get("observedGeneration"), snapshot.now.replace(tzinfo=None))
        current = [p for p in snapshot.pods if p.attempt == status.get("attempt")]
        phase = status.get("phase")
        if phase == "Succeeded":
            result, _ = read_result(current)
            return apply_result(status, result, obj.spec.output) if result else status
        if phase == "Failed":
            return status
        running = [p.name for p in current if p.phase == "Running" and not p.deleting]
        return apply_progress(status, snapshot.reports, [p.name for p in current], running, obj.spec.output,
                              snapshot.now)


def adapter() -> SAETrainingJobAdapter:
    return SAETrainingJobAdapter(kind_info("SAETrainingJob"), "interp_workloads.train", True, True, True,
                                 status_port=STATUS_PORT)
