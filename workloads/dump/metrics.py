"""Prometheus metrics of one dump rank, served on the status port's ``/metrics`` (a registry of its own).

Store-wide gauges are read from the same report the operator polls at ``/progress``, at scrape time, so the two never
disagree; counters count what this rank's process did since it started (a restarted pod starts them at zero, and
``interp_dump_shards_resumed_total`` says how much of the store it found already written).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from interp_operator.api.activationdump import ActivationDumpStatus

STAGES: tuple[str, ...] = get_args(get_args(ActivationDumpStatus.model_fields["stage"].annotation)[0])
"""The stages of a dump, as the object's status names them."""


class DumpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tokens_done = Gauge("interp_dump_tokens_done", "Tokens extracted into the store (store-wide, as this "
                                 "rank sees the output directory)", registry=r)
        # *_expected, not *_total: Prometheus keeps that suffix for counters.
        self.tokens_expected = Gauge("interp_dump_tokens_expected", "Tokens the store will hold (0 until the corpus "
                                     "is tokenised)", registry=r)
        self.tokens_per_second = Gauge("interp_dump_tokens_per_second", "This rank's recent extraction throughput "
                                       "(last ~30 s)", registry=r)
        self.shards_done = Gauge("interp_dump_shards_done", "Final shards written (store-wide)", registry=r)
        self.shards_expected = Gauge("interp_dump_shards_expected", "Shards the store will hold (0 until known)",
                                     registry=r)
        self.bytes_written = Gauge("interp_dump_bytes_written", "Bytes of final shards on disk (store-wide)",
                                   registry=r)
        self.stage = Gauge("interp_dump_stage", "1 for the stage this rank is in, 0 for the others", ["stage"],
                           registry=r)
        self.rank_tokens = Counter("interp_dump_rank_tokens", "Tokens this rank's process ran forward passes over",
                                   registry=r)
        self.shards_written = Counter("interp_dump_shards_written", "Shards this rank's process wrote, by stage "
                                      "(raw: before the shuffle, shards: final)", ["stage"], registry=r)
        self.shards_resumed = Counter("interp_dump_shards_resumed", "Shards this rank's process found already "
                                      "complete and skipped (a resumed run)", registry=r)
        self.shards_rewritten = Counter("interp_dump_shards_rewritten", "Final shards that failed verification "
                                        "and were written again", registry=r)
        self.attempt = Gauge("interp_dump_attempt", "The gang attempt this pod belongs to (pod names carry it; "
                             "a restart of the whole gang starts the next)", registry=r)
        self.attempt.set(int(os.environ.get("INTERP_ATTEMPT") or 0))
        for stage in ("raw", "shards"):  # present from the start, so that rate() has a zero to begin from
            self.shards_written.labels(stage)

    def render(self, report: Mapping[str, Any]) -> str:
        """The exposition text, the gauges first set from ``report`` (:meth:`Dump.report`)."""
        self.tokens_done.set(report.get("tokensDone") or 0)
        self.tokens_expected.set(report.get("tokensTotal") or 0)
        self.tokens_per_second.set(report.get("tokensPerSecond") or 0.0)
        self.shards_done.set(report.get("shardsDone") or 0)
        self.shards_expected.set(report.get("shardsTotal") or 0)
        self.bytes_written.set(report.get("bytesWritten") or 0)
        for stage in STAGES:
            self.stage.labels(stage).set(1.0 if stage == report.get("stage") else 0.0)
        return generate_latest(self.registry).decode()
