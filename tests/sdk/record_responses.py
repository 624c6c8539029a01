"""Re-records the API exchanges the unit tests replay (tests/sdk/recorded/): run it explicitly,

    .venv/bin/python -m pytest -p no:xdist -q tests/sdk/record_responses.py

against interp-local with the real operator. It is not collected with the suite (no test_ prefix)."""

from __future__ import annotations

import pytest
from sdk_recording import RecordingTransport

from interp_operator.sdk import Client, JobFailed, shortforms
from interp_operator.sdk.transport import Connection, connect


def recording_client(sdk_endpoint, mounts) -> tuple[Client, RecordingTransport]:
    transport = RecordingTransport(connect(Connection(str(sdk_endpoint.kubeconfig))))
    return Client(transport=transport, namespace="sdk", mounts=mounts), transport


def dump(name: str, hook: str) -> object:
    return shortforms.dump(name, model_location="pvc://data/model", dataset="pvc://data/corpus", hook_points=[hook],
                           output=f"pvc://data/stores/{name}", dtype="float32", context_length=16, batch_size=4,
                           tokens_per_shard=256, gpus=1)


def test_record_dump_succeeded(sdk_endpoint, sdk_operator, volume, mounts):
    client, transport = recording_client(sdk_endpoint, mounts)
    job = client.create(dump("recorded-dump", "resid_post.0"))
    job.wait(timeout=150, progress=False)
    client.get("actdump", "recorded-dump")
    client.list()
    job.events()
    transport.save("dump-succeeded")


def test_record_dump_failed(sdk_endpoint, sdk_operator, volume, mounts):
    client, transport = recording_client(sdk_endpoint, mounts)
    job = client.create(dump("recorded-bad", "resid_post.9"))
    with pytest.raises(JobFailed):
        job.wait(timeout=120, progress=False)
    transport.save("dump-failed")


def test_record_training(sdk_endpoint, sdk_operator, volume, mounts):
    client, transport = recording_client(sdk_endpoint, mounts)
    obj = shortforms.train("recorded-train", model_location="tiny/model", saes=["topk:k=4:dict=64"],
                           hook_point="resid_post.0", dataset="pvc://data/corpus", output="pvc://data/recorded-train",
                           tokens=4096, replicas=2, gpus=1)
    job = client.create(obj)
    job.wait(timeout=90, progress=False)
    job.pods()
    list(job.logs(rank=0))
    job.events()
    transport.save("training-succeeded")
