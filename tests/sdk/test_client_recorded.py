"""The client against recorded API responses (tests/sdk/recorded/, from interp-local with the real operator; re-record
with tests/sdk/record_responses.py): typed status back, wait() with its bar and its failure, logs, events, pods, the
CLI's views. Expected values are read from the recordings' raw JSON, not through the SDK."""

from __future__ import annotations

import io
import json
from contextlib import contextmanager

import pytest
from sdk_recording import RECORDED, ReplayTransport

from interp_operator.api.activationdump import ActivationDumpStatus
from interp_operator.api.saetrainingjob import SAETrainingJobStatus
from interp_operator.sdk import Client, JobFailed, cli, shortforms
from interp_operator.sdk.progress import StatusBar
from interp_operator.sdk.status import describe


def last_watched(name: str) -> dict:
    """The last object the recorded watch delivered (read as plain JSON)."""
    recording = json.loads((RECORDED / f"{name}.json").read_text())
    watch = next(e for e in recording["exchanges"] if "lines" in e)
    events = [json.loads(line) for line in watch["lines"]]
    return next(e["object"] for e in reversed(events) if e["type"] == "MODIFIED")


def client_for(name: str) -> tuple[Client, ReplayTransport]:
    transport = ReplayTransport(name)
    return Client(transport=transport, namespace="sdk", mounts={}), transport


def recorded_dump(name: str, hook: str):
    return shortforms.dump(name, model_location="pvc://data/model", dataset="pvc://data/corpus", hook_points=[hook],
                           output=f"pvc://data/stores/{name}", dtype="float32", context_length=16, batch_size=4,
                           tokens_per_shard=256, gpus=1)


def test_wait_returns_the_typed_final_status_and_draws_the_bar():
    client, transport = client_for("dump-succeeded")
    job = client.create(recorded_dump("recorded-dump", "resid_post.0"))
    # What was sent: the fields that were set, in camelCase, in the client's namespace.
    sent = transport.calls[0][1]
    assert sent["metadata"] == {"name": "recorded-dump", "namespace": "sdk"}
    assert sent["spec"]["hookPoints"] == ["resid_post.0"] and "shuffle" not in sent["spec"]
    bar = io.StringIO()
    status = job.wait(timeout=5, progress=StatusBar("dump", stream=bar, notebook=False))
    final = last_watched("dump-succeeded")["status"]
    assert isinstance(status, ActivationDumpStatus)
    assert status.phase == final["phase"] == "Succeeded"
    assert status.summary.tokens == final["summary"]["tokens"]
    assert status.shards_done == final["shardsDone"] and status.manifest == final["manifest"]
    drawn = bar.getvalue()
    assert drawn.count("\r") >= 3, "the bar was redrawn for each status"
    assert "100%" in drawn.splitlines()[-1] and "phase=Succeeded" in drawn.splitlines()[-1]
    report = describe(job.kind, job.name, status)
    assert f"manifest   {final['manifest']}" in report and "Succeeded" in report


def test_wait_raises_the_failure_reason_of_the_status_condition():
    client, _ = client_for("dump-failed")
    job = client.create(recorded_dump("recorded-bad", "resid_post.9"))
    with pytest.raises(JobFailed) as failed:
        job.wait(timeout=5, progress=False)
    condition = next(c for c in last_watched("dump-failed")["status"]["conditions"] if c["type"] == "Failed")
    assert (failed.value.reason, failed.value.message) == (condition["reason"], condition["message"])
    assert str(failed.value) == f"ActivationDump recorded-bad failed: {condition['reason']}: {condition['message']}"
    status = job.wait(timeout=5, progress=False, raise_on_failure=False)
    assert status.phase == "Failed"


def test_training_status_pods_logs_and_events():
    client, _ = client_for("training-succeeded")
    obj = shortforms.train("recorded-train", model_location="tiny/model", saes=["topk:k=4:dict=64"],
                           hook_point="resid_post.0", dataset="pvc://data/corpus", output="pvc://data/recorded-train",
                           tokens=4096, replicas=2, gpus=1)
    job = client.create(obj)
    status = job.wait(timeout=5, progress=False)
    final = last_watched("training-succeeded")["status"]
    assert isinstance(status, SAETrainingJobStatus)
    assert status.world_size == final["worldSize"] == 2
    assert status.placement.nodes == final["placement"]["nodes"]
    names = [p["metadata"]["name"] for p in job.pods()]
    assert names == ["recorded-train-1-0", "recorded-train-1-1"]
    recording = json.loads((RECORDED / "training-succeeded.json").read_text())
    log = next(e for e in recording["exchanges"] if e["key"].endswith("/log?container=workload"))
    assert list(job.logs(rank=0)) == log["lines"] and log["lines"]
    reasons = [e["reason"] for e in job.events()]
    assert "GangCreated" in reasons and "AllPodsSucceeded" in reasons


def replayed_until_done(name: str, hook: str) -> Client:
    """A replaying client that has gone through the recorded create and wait (later reads see the final object)."""
    client, _ = client_for(name)
    client.create(recorded_dump(name.replace("dump-succeeded", "recorded-dump").replace("dump-failed", "recorded-bad"),
                                hook)).wait(timeout=5, progress=False, raise_on_failure=False)
    return client


def test_get_list_and_not_found():
    client = replayed_until_done("dump-succeeded", "resid_post.0")
    handle = client.get("actdump", "recorded-dump")
    assert handle.kind == "ActivationDump" and handle.phase == "Succeeded"
    assert handle.spec.hook_points == ["resid_post.0"]
    listed = client.list()
    assert [h.name for h in listed] == ["recorded-dump"]
    with pytest.raises(AssertionError, match="no recorded answer"):
        client.get("saejob", "never-recorded")


def test_cli_status_and_get_read_the_recorded_objects(monkeypatch, capsys):
    client = replayed_until_done("dump-succeeded", "resid_post.0")
    monkeypatch.setattr(cli, "Client", lambda *a, **k: client)
    assert cli.main(["status", "actdump/recorded-dump", "-o", "json"]) == 0
    recording = json.loads((RECORDED / "dump-succeeded.json").read_text())
    last_get = [e for e in recording["exchanges"] if e["key"].endswith("/activationdumps/recorded-dump")][-1]
    assert json.loads(capsys.readouterr().out) == last_get["body"]["status"]
    assert cli.main(["get", "actdump"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "PROGRESS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["actdump/recorded-dump", "Succeeded", "100%", "0"]


def test_cli_status_of_a_failed_job_exits_1_with_the_reason(monkeypatch, capsys):
    client = replayed_until_done("dump-failed", "resid_post.9")
    monkeypatch.setattr(cli, "Client", lambda *a, **k: client)
    assert cli.main(["wait", "actdump/recorded-bad", "-q"]) == cli.EXIT_FAILED
    assert "PermanentFailure" in capsys.readouterr().err


class _Flaky:
    """A transport whose first watch ends with an ERROR event (410 Expired): the client must re-read and go on."""

    namespace = "sdk"
    api_client = None

    def __init__(self, running: dict, final: dict) -> None:
        self.running, self.final, self.gets, self.watches = running, final, 0, 0

    def request(self, method, path, **kwargs):
        self.gets += 1
        return self.running

    @contextmanager
    def stream(self, path, **kwargs):
        self.watches += 1
        if self.watches == 1:
            yield iter([json.dumps({"type": "ERROR", "object": {"code": 410, "message": "too old"}}).encode()])
        else:
            yield iter([json.dumps({"type": "MODIFIED", "object": self.final}).encode()])


def test_watch_recovers_from_an_expired_resource_version():
    final = last_watched("dump-succeeded")
    running = json.loads(json.dumps(final))
    running["status"]["phase"] = "Running"
    transport = _Flaky(running, final)
    client = Client(transport=transport, namespace="sdk", mounts={})
    status = client.get("actdump", "recorded-dump").wait(timeout=5, progress=False)
    assert status.phase == "Succeeded" and transport.watches == 2 and transport.gets == 3
