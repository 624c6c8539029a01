"""The dump's Prometheus metrics: served on the status port's /metrics, parsed with prometheus_client's own parser, and
checked against the store on disk (a fresh run, then a resumed one)."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from dump_support import dump_spec
from prometheus_client.parser import text_string_to_metric_families

import interp_workloads.dump.run as dump_run
from interp_workloads.dump.config import parse_config
from interp_workloads.dump.run import Dump
from interp_workloads.progress import StatusServer
from interp_workloads.testing import build_tiny_model, write_corpus


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model("gpt2", tmp_path_factory.mktemp("metrics-model"), n_layers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("metrics-corpus") / "corpus.jsonl", documents=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(monkeypatch):
    """Runs the dump with a real status server on $INTERP_STATUS_PORT, keeping what the dump handed it, so that the
    same endpoint can be scraped again once the run is over."""
    for name in ("RANK", "WORLD_SIZE", "INTERP_PATH_OUTPUT", "INTERP_PATH_MODEL", "INTERP_PATH_DATASET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INTERP_TERMINATION_MESSAGE_PATH", "/nonexistent/termination-log")
    monkeypatch.setenv("INTERP_STATUS_PORT", str(free_port()))
    monkeypatch.setenv("POD_IP", "127.0.0.1")
    monkeypatch.setenv("INTERP_ATTEMPT", "2")
    handed: dict = {}
    real = dump_run.status_server_from_env

    def spy(report, metrics=None):
        handed.update(report=report, metrics=metrics)
        server = real(report, metrics)
        assert server is not None
        handed["during"] = scrape(server.port)  # the endpoint answers from the start of the run
        return server

    monkeypatch.setattr(dump_run, "status_server_from_env", spy)

    def after_run() -> dict[str, dict[tuple, float]]:
        assert handed["metrics"] is not None, "the dump hands the status server no metrics (/metrics is a 404)"
        server = StatusServer(handed["report"], host="127.0.0.1", port=0, metrics=handed["metrics"]).start()
        try:
            return scrape(server.port)
        finally:
            server.stop()

    return handed, after_run


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def one(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_dump_metrics_match_the_store_fresh_and_resumed(served, model_dir, corpus, tmp_path):
    handed, after_run = served
    out = tmp_path / "store"
    spec = dump_spec(model_dir, corpus, out)
    summary = Dump(parse_config({"spec": spec})).run()
    shards, tokens = summary["shards"], summary["tokens"]
    assert one(handed["during"], "interp_dump_stage", stage="start") == 1
    assert one(handed["during"], "interp_dump_shards_done") == 0

    fresh = after_run()
    assert one(fresh, "interp_dump_tokens_done") == one(fresh, "interp_dump_tokens_expected") == tokens
    assert one(fresh, "interp_dump_shards_done") == one(fresh, "interp_dump_shards_expected") == shards
    on_disk = sum(f.stat().st_size for f in (out / "shards").glob("*/*.safetensors"))
    assert one(fresh, "interp_dump_bytes_written") == on_disk == summary["bytes"]
    assert {dict(k)["stage"]: v for k, v in fresh["interp_dump_stage"].items()} == {
        "start": 0, "extract": 0, "shuffle": 0, "verify": 0, "done": 1}
    assert one(fresh, "interp_dump_rank_tokens_total") == tokens  # one rank ran forward passes over every token
    assert one(fresh, "interp_dump_shards_written_total", stage="shards") == shards
    assert one(fresh, "interp_dump_shards_written_total", stage="raw") == 0
    assert one(fresh, "interp_dump_shards_resumed_total") == 0
    assert one(fresh, "interp_dump_tokens_per_second") > 0
    assert one(fresh, "interp_dump_attempt") == 2

    # A rank restarted after shard 3's record was lost: it keeps every other shard and writes that one alone.
    (out / "manifest.json").unlink()
    (out / "shards" / "shard-000003.json").unlink()
    Dump(parse_config({"spec": spec})).run()
    resumed = after_run()
    assert one(resumed, "interp_dump_shards_resumed_total") == shards - 1
    assert one(resumed, "interp_dump_shards_written_total", stage="shards") == 1
    assert one(resumed, "interp_dump_shards_rewritten_total") == 0
    assert one(resumed, "interp_dump_shards_done") == shards
    assert json.loads((out / "manifest.json").read_text())["tokens"] == tokens
