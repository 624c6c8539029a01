"""The SDK against interp-local through the real operator: a dump submitted from Python, waited on with a progress
bar, its store opened; a training job (the gang self-test workload) watched, profiled, suspended and resumed; a
failing job's reason raised."""

from __future__ import annotations

import io
import uuid

import pytest
import torch

from interp_operator.api.common import EnvVar
from interp_operator.sdk import JobFailed, shortforms
from interp_operator.sdk.status import describe
from interp_workloads.store.verify import verify_store


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_dump_from_python_wait_with_progress_and_open_the_store(sdk, volume):
    name = unique("dump")
    obj = shortforms.dump(name, model_location="pvc://data/model", dataset="pvc://data/corpus",
                          hook_points=["resid_post.0"], output=f"pvc://data/stores/{name}", dtype="float32",
                          context_length=16, batch_size=4, tokens_per_shard=256, gpus=1)
    job = sdk.create(obj)
    assert job.namespace == sdk.namespace == "sdk" and job.kind == "ActivationDump"
    bar_output = io.StringIO()
    status = job.wait(timeout=150, stream=bar_output)
    assert status.phase == "Succeeded"
    assert "ActivationDump/" + name in bar_output.getvalue()

    # The store the SDK opens is the one on the volume, and what the status reports about it is true.
    manifest = verify_store(volume / "stores" / name)
    store = job.results.open_store(verify=True)
    assert store.tokens == manifest.tokens == status.summary.tokens == status.progress.tokens_done
    assert store.hooks == ["resid_post.0"]
    assert job.results.manifest().tokens == manifest.tokens
    reader = job.results.reader("resid_post.0", batch_size=8)
    batch = next(iter(reader))
    # The first unshuffled batch is the first rows of the first shard, read here with plain safetensors.
    from safetensors.torch import load_file

    shard = manifest.shards[0]
    first = load_file(str(volume / "stores" / name / shard.files["resid_post.0"].path))
    expected = first["activations"][:8]
    assert torch.equal(batch.activations["resid_post.0"], expected)
    assert "Succeeded" in describe(job.kind, job.name, status)


def test_training_job_is_watched_profiled_suspended_and_resumed(sdk):
    name = unique("train")
    obj = shortforms.train(name, model_location="tiny/model", saes=["topk:k=4:dict=64"], hook_point="resid_post.0",
                           dataset="pvc://data/corpus", output=f"pvc://data/{name}", tokens=4096,
                           batch_size_tokens=4096, replicas=2, gpus=1,
                           restartPolicy={"backoffBaseSeconds": 1, "backoffMaxSeconds": 2},
                           runPolicy={"suspend": True})
    obj.spec.gang.env = [EnvVar(name="INTERP_PROBE_STEPS", value="4"),
                         EnvVar(name="INTERP_PROBE_STEP_SECONDS", value="0.3")]
    job = sdk.create(obj)
    suspended = next(h for h in job.watch(timeout=30) if h.phase == "Suspended")
    assert suspended.status.phase == "Suspended" and not job.pods()
    job.resume()
    assert job.raw["spec"]["runPolicy"]["suspend"] is False
    job.profile("1-2")
    assert sdk.get("saejob", name).raw["metadata"]["annotations"]["interp.dev/profile-steps"] == "1-2"
    # The gang self-test stands in for the trainer: it runs to its end, but leaves no exports for the operator to
    # verify, so the end may be Failed (OutputNotVerified); wait() returns it either way when told not to raise.
    status = job.wait(timeout=90, progress=False, raise_on_failure=False)
    assert status.phase in ("Succeeded", "Failed") and status.world_size == 2
    reasons = [e["reason"] for e in job.events()]
    assert "Suspended" in reasons and "GangCreated" in reasons, reasons
    log = "\n".join(job.logs(rank=1))
    assert log, "rank 1 logged nothing"
    assert len(job.pods()) == 2


def test_failed_job_raises_with_the_reason_from_its_condition(sdk):
    name = unique("bad")
    obj = shortforms.dump(name, model_location="pvc://data/model", dataset="pvc://data/corpus",
                          hook_points=["resid_post.9"], output=f"pvc://data/stores/{name}", dtype="float32",
                          context_length=16, batch_size=4, tokens_per_shard=256, gpus=1)
    job = sdk.create(obj)
    with pytest.raises(JobFailed) as failed:
        job.wait(timeout=120, progress=False)
    assert failed.value.reason == "PermanentFailure" and "exit code 3" in failed.value.message
    assert failed.value.status.phase == "Failed"
