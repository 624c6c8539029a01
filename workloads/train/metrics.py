"""Training metrics: one record per SAE per metrics interval, as a JSONL log, Prometheus gauges and a PNG of curves.

The JSONL log (``<output>/metrics.jsonl``, rank 0) has one object per line: ``{"step", "tokens", "sae", "mse",
"fvu", "explainedVariance", "l0", "deadFraction", "denseFraction", "lr", "skippedSteps", "time"}``. A resumed run
first drops the lines past its checkpoint, so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "training-curves.png"
_GAUGES = {"mse": "Mean squared reconstruction error (normalised units)", "fvu": "Fraction of variance unexplained",
           "l0": "Mean active latents per token", "deadFraction": "Fraction of dead latents",
           "denseFraction": "Fraction of dense latents", "lr": "Current learning rate",
           "ceLossRecovered": "Next-token loss recovered with the SAE spliced in, vs zero-ablation (held-out text)"}


class MetricsLog:
    """Appends records to the JSONL log (rank 0 only writes)."""

    def __init__(self, output: Path, *, enabled: bool) -> None:
        self.path = output / METRICS_FILE
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (those of a run that was interrupted after its last checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and _step_of(line) is not None and _step_of(line) <= step]  # type: ignore[operator]
        temporary = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        temporary.write_text("".join(f"{line}\n" for line in kept))
        os.replace(temporary, self.path)

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _step_of(line: str) -> int | None:
    try:
        step = json.loads(line).get("step")
    except ValueError:
        return None
    return step if isinstance(step, int) else None


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class PrometheusMetrics:
    """Gauges per SAE and counters of the run, served on the status port's ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gauges = {key: Gauge(f"interp_sae_{_snake(key)}", help_, ["sae"], registry=self.registry)
                       for key, help_ in _GAUGES.items()}
        self.tokens = Gauge("interp_train_tokens", "Training tokens consumed by the gang", registry=self.registry)
        self.step = Gauge("interp_train_step", "Optimiser steps done", registry=self.registry)
        self.tokens_per_second = Gauge("interp_train_tokens_per_second", "This rank's recent throughput",
                                       registry=self.registry)
        self.skipped = Counter("interp_train_skipped_steps", "SAE steps skipped for a non-finite batch or loss",
                               ["sae"], registry=self.registry)
        self.checkpoints = Counter("interp_train_checkpoints", "Checkpoints written", registry=self.registry)

    def record(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            for key, gauge in self.gauges.items():
                value = record.get(key)
                if isinstance(value, int | float):
                    gauge.labels(record["sae"]).set(value)

    def render(self) -> str:
        return generate_latest(self.registry).decode()


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def plot_curves(log: Path, out: Path) -> Path | None:
    """A PNG of FVU, L0, dead fraction and MSE against tokens, one line per SAE (headless matplotlib)."""
    records = read_log(log)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = (("fvu", "FVU"), ("l0", "L0"), ("deadFraction", "dead fraction"), ("mse", "MSE"))
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    names = sorted({r["sae"] for r in records})
    for axis, (key, title) in zip(axes.flat, panels, strict=True):
        for name in names:
            points = [(r["tokens"], r[key]) for r in records if r["sae"] == name and r.get(key) is not None]
            if points:
                axis.plot(*zip(*points, strict=True), label=name)
        axis.set_title(title)
        axis.set_xlabel("tokens")
        if key in ("fvu", "mse"):
            axis.set_yscale("log")
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    figure.savefig(temporary, dpi=90)
    plt.close(figure)
    os.replace(temporary, out)
    return out
