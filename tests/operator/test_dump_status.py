"""ActivationDump status from the pods, table-driven: progress from /progress reports, the result from rank 0."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from interp_operator.api.common import StorageRef
from interp_operator.gang.pods import PodState
from interp_operator.kinds.dump import apply_progress, apply_result, manifest_location, read_result, verify_store

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def report(rank=0, shards=0, shards_total=None, tokens=0, tokens_total=None, written=0, rate=0.0, **extra):
    """A rank's /progress answer, as the workload sends it."""
    return {"rank": rank, "worldSize": 3, "stage": "extract", "shardsDone": shards, "shardsTotal": shards_total,
            "tokensDone": tokens, "tokensTotal": tokens_total, "bytesWritten": written, "tokensPerSecond": rate} | extra


STORED = {"phase": "Running", "attempt": 1, "shardsDone": 8, "shardsTotal": 12, "bytesWritten": 1000,
          "progress": {"tokensDone": 3000, "tokensTotal": 5000, "percent": 60.0, "tokensPerSecond": 50.0,
                       "eta": "2026-11-24T12:00:40Z"}}
RUNNING = {"d-1-0", "d-1-1", "d-1-2"}

# (stored status, reports by pod, running pods) -> the fields the status then shows
CASES = {
    "no reports keep the status": (
        STORED, {}, RUNNING, STORED),
    "one rank": (
        {"phase": "Running"},
        {"d-1-0": report(shards=5, shards_total=12, tokens=1000, tokens_total=5000, written=123, rate=100.0)},
        RUNNING,
        {"shardsDone": 5, "shardsTotal": 12, "bytesWritten": 123,
         "progress": {"tokensDone": 1000, "tokensTotal": 5000, "percent": 20.0, "tokensPerSecond": 100.0,
                      "eta": "2026-11-24T12:00:40Z"}}),
    "several ranks: freshest counts, summed rates": (
        {"phase": "Running"},
        {"d-1-0": report(0, 5, 12, 1000, 5000, 500, 100.0), "d-1-1": report(1, 6, 12, 1200, 5000, 600, 150.0),
         "d-1-2": report(2, 4, 12, 900, 5000, 400, 50.0)},
        RUNNING,
        {"shardsDone": 6, "shardsTotal": 12, "bytesWritten": 600,
         "progress": {"tokensDone": 1200, "tokensTotal": 5000, "percent": 24.0, "tokensPerSecond": 300.0,
                      "eta": "2026-11-24T12:00:12Z"}}),  # 3800 tokens at 300/s: 12.7 s
    "a restarted rank's low counts do not take progress back": (
        STORED, {"d-1-1": report(1, 0, 12, 0, 5000, 0, 100.0)}, RUNNING,
        {"shardsDone": 8, "shardsTotal": 12, "bytesWritten": 1000,
         "progress": {"tokensDone": 3000, "tokensTotal": 5000, "percent": 60.0, "tokensPerSecond": 100.0,
                      "eta": "2026-11-24T12:00:20Z"}}),
    "unknown totals: no percent, no ETA": (
        {"phase": "Running"}, {"d-1-0": report(tokens=700, rate=70.0)}, RUNNING,
        {"shardsDone": 0, "bytesWritten": 0,
         "progress": {"tokensDone": 700, "tokensTotal": 0, "percent": 0.0, "tokensPerSecond": 70.0}}),
    "totals from whichever report has them": (
        {"phase": "Running"},
        {"d-1-0": report(tokens=100, rate=10.0), "d-1-1": report(1, 1, 4, 200, 400, 10, 10.0)}, RUNNING,
        {"shardsDone": 1, "shardsTotal": 4, "bytesWritten": 10,
         "progress": {"tokensDone": 200, "tokensTotal": 400, "percent": 50.0, "tokensPerSecond": 20.0,
                      "eta": "2026-11-24T12:00:10Z"}}),
    "rates only from running pods; none running keeps the last rate": (
        STORED, {"d-1-0": report(0, 9, 12, 3500, 5000, 1100, 400.0)}, set(),
        {"shardsDone": 9, "shardsTotal": 12, "bytesWritten": 1100,
         "progress": {"tokensDone": 3500, "tokensTotal": 5000, "percent": 70.0, "tokensPerSecond": 50.0,
                      "eta": "2026-11-24T12:00:40Z"}}),
    "garbled fields are ignored": (
        STORED, {"d-1-0": {"shardsDone": "99", "tokensDone": -5, "bytesWritten": True, "shardsTotal": 1.5,
                           "tokensTotal": None, "tokensPerSecond": "fast"}}, RUNNING,
        {"shardsDone": 8, "shardsTotal": 12, "bytesWritten": 1000,
         "progress": {"tokensDone": 3000, "tokensTotal": 5000, "percent": 60.0, "tokensPerSecond": 50.0,
                      "eta": "2026-11-24T12:00:40Z"}}),
    "all tokens done: no ETA left": (
        STORED, {"d-1-0": report(0, 12, 12, 5000, 5000, 2000, 80.0)}, RUNNING,
        {"shardsDone": 12, "shardsTotal": 12, "bytesWritten": 2000,
         "progress": {"tokensDone": 5000, "tokensTotal": 5000, "percent": 100.0, "tokensPerSecond": 80.0}}),
    "a stalled gang has no ETA": (
        STORED, {"d-1-0": report(0, 8, 12, 3000, 5000, 1000, 1e-9)}, RUNNING,
        {"shardsDone": 8, "shardsTotal": 12, "bytesWritten": 1000,
         "progress": {"tokensDone": 3000, "tokensTotal": 5000, "percent": 60.0, "tokensPerSecond": 0.0}}),
}


@pytest.mark.parametrize("case", CASES)
def test_progress_from_reports(case):
    stored, reports, running, expected = CASES[case]
    status = apply_progress(stored, reports, running, NOW)
    assert {k: v for k, v in status.items() if k not in ("phase", "attempt", "stage")} == \
        {k: v for k, v in expected.items() if k not in ("phase", "attempt")}
    assert status["phase"] == stored["phase"]


@pytest.mark.parametrize(("stages", "running", "expected"), [
    ({"d-1-0": "extract", "d-1-1": "shuffle"}, RUNNING, "extract"),  # a rank still extracting holds the gang there
    ({"d-1-0": "verify", "d-1-1": "done", "d-1-2": "done"}, RUNNING, "verify"),  # 100% tokens, not finished
    ({"d-1-0": "verify", "d-1-1": "extract"}, {"d-1-0"}, "verify"),  # an exited rank's last report does not count
    ({"d-1-0": "teleport"}, RUNNING, None),  # an unknown stage is ignored
])
def test_the_stage_is_the_least_advanced_running_ranks(stages, running, expected):
    reports = {name: report(stage=stage) for name, stage in stages.items()}
    assert apply_progress({"phase": "Running"}, reports, running, NOW).get("stage") == expected


def pods(*messages, ranks=None):
    ranks = ranks if ranks is not None else range(len(messages))
    return tuple(PodState(f"d-1-{r}", 1, r, "Succeeded", message=m) for r, m in zip(ranks, messages, strict=True))


RESULT = {"verified": True, "manifest": "manifest.json", "tokens": 4096, "shards": 4, "bytes": 1 << 20,
          "hookPoints": ["resid_post.3", "mlp_out.3"], "dModel": 512, "dtype": "bfloat16", "sha256": "ab" * 32}


@pytest.mark.parametrize(("pods", "problem"), [
    (pods(json.dumps(RESULT), None, '{"rank": 2, "verified": true}'), None),
    (pods(None, json.dumps(RESULT)), "rank 0 (pod d-1-0) left no termination message, so the store was not verified"),
    (pods("Traceback (most recent call last):"),
     "rank 0 (pod d-1-0) left a termination message that is not JSON: 'Traceback (most recent call last):'"),
    (pods('{"verified": false}'), 'rank 0 (pod d-1-0) did not report a verified store: {"verified": false}'),
    (pods('{"verified": "true"}'), 'rank 0 (pod d-1-0) did not report a verified store: {"verified": "true"}'),
    (pods('[{"verified": true}]'), 'rank 0 (pod d-1-0) did not report a verified store: [{"verified": true}]'),
    (pods(json.dumps(RESULT), ranks=[1]), "there is no pod of rank 0 to report the store"),
])
def test_only_rank_0s_verified_result_counts(pods, problem):
    result, why = read_result(pods)
    assert why == problem == verify_store(pods)
    assert result == (RESULT if problem is None else None)


@pytest.mark.parametrize(("output", "location"), [
    ({"claimName": "data", "subPath": "activations/run-1"}, "pvc://data/activations/run-1/manifest.json"),
    ({"claimName": "data", "subPath": "activations/run-1/"}, "pvc://data/activations/run-1/manifest.json"),
    ({"claimName": "data"}, "pvc://data/manifest.json"),
    ({"uri": "file:///shared/run-1/"}, "file:///shared/run-1/manifest.json"),
])
def test_manifest_location_speaks_the_specs_terms(output, location):
    assert manifest_location(StorageRef.model_validate(output)) == location


def test_succeeded_status_shows_the_store():
    status = apply_result(STORED | {"phase": "Succeeded"}, RESULT, StorageRef(claimName="data", subPath="d"))
    assert status["manifest"] == "pvc://data/d/manifest.json"
    assert status["summary"] == {"hookPoints": ["resid_post.3", "mlp_out.3"], "dModel": 512, "dtype": "bfloat16",
                                 "tokens": 4096}
    assert (status["shardsDone"], status["shardsTotal"], status["bytesWritten"]) == (4, 4, 1 << 20)
    assert status["progress"] == {"tokensDone": 4096, "tokensTotal": 4096, "percent": 100.0}


@pytest.mark.parametrize(("message", "manifest", "summary"), [
    ({"verified": True, "manifest": "store/manifest.json", "hookPoints": "embed", "dModel": "512", "tokens": -1},
     "pvc://data/store/manifest.json", {}),
    ({"verified": True, "manifest": "../elsewhere.json", "dtype": "float16"}, "pvc://data/manifest.json",
     {"dtype": "float16"}),
])
def test_garbled_result_fields_are_left_out(message, manifest, summary):
    status = apply_result(STORED | {"phase": "Succeeded"}, message, StorageRef(claimName="data"))
    assert (status["manifest"], status["summary"]) == (manifest, summary)
    assert (status["shardsDone"], status["bytesWritten"]) == (8, 1000)  # what the reports had shown
    assert status["progress"] == {"tokensDone": 3000, "tokensTotal": 5000, "percent": 100.0}
