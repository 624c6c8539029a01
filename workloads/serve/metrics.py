"""Prometheus metrics of one server, in a registry of its own (several servers can share a test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("interp_serve_requests", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("interp_serve_request_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.rejections = Counter("interp_serve_rejections", "Requests refused, by reason", ["reason"], registry=r)
        self.batch_size = Histogram("interp_serve_batch_size", "Rows in each decode step", buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.tokens = Counter("interp_serve_generated_tokens", "Tokens generated", registry=r)
        self.step_seconds = Histogram("interp_serve_step_seconds", "Duration of one engine step",
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens_per_second = Gauge("interp_serve_tokens_per_second", "Tokens per second of the last step",
                                       registry=r)
        self.queue_depth = Gauge("interp_serve_queue_depth", "Requests waiting to join the batch", registry=r)
        self.in_flight = Gauge("interp_serve_in_flight", "Requests being served", registry=r)

    def observe_step(self, batch: int, tokens: int, seconds: float, queue_depth: int) -> None:
        self.batch_size.observe(batch)
        self.tokens.inc(tokens)
        self.step_seconds.observe(seconds)
        self.tokens_per_second.set(tokens / seconds if seconds > 0 else 0.0)
        self.queue_depth.set(queue_depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
