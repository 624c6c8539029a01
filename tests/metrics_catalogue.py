"""Every Prometheus metric the code registers (operator, dump, trainer, server), read from the registries themselves,
and the series names a scrape of each shows."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import interp_operator.metrics  # noqa: F401  (registers the operator's metrics, as the operator does)
from interp_workloads.dump.metrics import DumpMetrics
from interp_workloads.serve.metrics import Metrics as ServerMetrics
from interp_workloads.train.metrics import PrometheusMetrics as TrainerMetrics

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",)}


@dataclass(frozen=True)
class Metric:
    family: str
    type: str
    labels: frozenset[str]

    @property
    def name(self) -> str:
        """The name as documented and queried: counters with their ``_total``."""
        return f"{self.family}_total" if self.type == "counter" else self.family

    @property
    def series(self) -> tuple[str, ...]:
        return tuple(f"{self.family}{suffix}" for suffix in SUFFIXES[self.type])


def _registered(registry: CollectorRegistry) -> set[Metric]:
    found = set()
    for collector in list(registry._collector_to_names):
        if isinstance(collector, MetricWrapperBase):  # a labelled metric shows its labels only once a child exists
            found.add(Metric(collector._name, collector._type, frozenset(collector._labelnames)))
            continue
        for family in collector.collect():
            labels = getattr(family, "_labelnames", None) or {k for s in family.samples for k in s.labels}
            found.add(Metric(family.name, family.type, frozenset(labels)))
    return found


def registered() -> dict[str, set[Metric]]:
    """Every metric by the process that serves it."""
    return {"operator": _registered(REGISTRY), "dump": _registered(DumpMetrics().registry),
            "trainer": _registered(TrainerMetrics().registry), "server": _registered(ServerMetrics().registry)}


def every_metric() -> dict[str, Metric]:
    return {m.name: m for metrics in registered().values() for m in metrics}


def series_names() -> dict[str, Metric]:
    """Every series name a scrape shows (``_bucket``, ``_count``, ... included), with its metric."""
    return {series: m for m in every_metric().values() for series in m.series}
