"""An SAETrainingJob CR end to end with the real trainer: an ActivationDump of a tiny model, then two SAEs trained from
its store by a 2-pod gang on interp-local; one rank killed mid-run, the gang restarts from the checkpoint and
Succeeds; the exports load, and the final FVU is that of an uninterrupted run."""

from __future__ import annotations

import json

import pytest
from gang_cluster import POOL, RACK, condition
from test_dump_cr import dump

from interp_operator.local.testing import wait_for
from interp_workloads.sae import load_sae
from interp_workloads.testing import build_tiny_model, write_corpus
from interp_workloads.train.checkpoint import steps

SAES = [
    {"name": "resid-topk", "hookPoint": "resid_post.0", "architecture": "topk", "dictSize": 128, "k": 8},
    {"name": "mlp-topk", "hookPoint": "mlp_out.1", "architecture": "topk", "dictSize": 64, "k": 4,
     "learningRate": 3e-3},
]
TRAINING = {"tokens": 64_000, "batchSizeTokens": 128, "learningRate": 5e-3, "lrSchedule": {"warmupSteps": 20},
            "checkpointIntervalSteps": 50, "metricsIntervalSteps": 50, "deadWindowTokens": 4096,
            "collectiveTimeoutSeconds": 30}


@pytest.fixture
def volume(cluster):
    root = cluster.volume()
    if not (root / "model" / "config.json").exists():
        build_tiny_model("gpt2", root / "model", n_layers=2)
    (root / "corpus").mkdir(parents=True, exist_ok=True)
    write_corpus(root / "corpus" / "part-0.jsonl", documents=120)
    return root


def training_job(name: str, dump_name: str) -> dict:
    return {
        "apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "metadata": {"name": name},
        "spec": {
            "model": {"storage": {"claimName": "data", "subPath": "model"}},
            "data": {"activationDump": {"name": dump_name}},
            "saes": SAES, "training": TRAINING,
            "output": {"claimName": "data", "subPath": f"saes/{name}"},
            "gang": {"replicas": 2, "resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": POOL,
                     "env": [{"name": "OMP_NUM_THREADS", "value": "1"}]},
            "scheduling": {"topology": {"keys": [RACK]}},
            "restartPolicy": {"backoffBaseSeconds": 1, "backoffMaxSeconds": 2, "backoffLimit": 3},
        },
    }


def final_fvus(output) -> dict[str, float]:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    last = max(r["step"] for r in records)
    return {r["sae"]: r["fvu"] for r in records if r["step"] == last}


def uninterrupted(store, output) -> dict[str, float]:
    """The same job in this process (one rank, local paths): the reference for the restarted gang."""
    from interp_workloads.train.config import parse_config
    from interp_workloads.train.run import Trainer

    spec = {"model": {"hubId": "tiny/gpt2"}, "data": {"store": {"uri": f"file://{store}"}}, "saes": SAES,
            "training": TRAINING, "output": {"uri": f"file://{output}"}}
    Trainer(parse_config({"name": "reference", "spec": spec})).run()
    return final_fvus(output)


def test_two_saes_from_a_dump_survive_a_killed_rank(cluster, volume, trainer_operator, tmp_path):
    cluster.create(dump("acts", parallelism=1))
    cluster.create(training_job("saes", "acts"))
    waiting = wait_for(lambda: (j := cluster.job("saes")).get("status", {}).get("conditions") and j, timeout=60,
                       interval=0.2)
    assert condition(waiting, "DataReady")["status"] in ("False", "True")
    dumped = cluster.wait_phase("acts", "Succeeded", "Failed", timeout=240, plural="activationdumps")
    assert dumped["status"]["phase"] == "Succeeded", dumped["status"]

    output = volume / "saes" / "saes"
    # Rank 1 dies right after the first checkpoint; the status is watched all along for live progress.
    seen: list[dict] = []

    def watch(until):
        def check():
            status = cluster.job("saes").get("status") or {}
            seen.append(status)
            return until(status)
        return check

    wait_for(watch(lambda s: steps(output)), timeout=180, interval=0.1, message="no checkpoint written")
    cluster.kill("saes-1-1")
    job_status = wait_for(watch(lambda s: s.get("phase") in ("Succeeded", "Failed") and s), timeout=300,
                          interval=0.3, message="the job did not end")
    live = [s for s in seen if s.get("phase") == "Running" and (s.get("progress") or {}).get("tokensDone", 0) > 0]
    assert live, "no live progress in the status while Running"
    assert live[-1]["progress"]["tokensTotal"] == TRAINING["tokens"]
    assert {m["name"] for m in live[-1].get("saes", [])} <= {m["name"] for m in SAES}
    assert condition({"status": job_status}, "DataReady")["reason"] == "ActivationDumpSucceeded"
    job = cluster.job("saes")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] >= 1 and status["attempt"] >= 2, "the whole gang restarted"
    assert status["exports"] == "pvc://data/saes/saes"
    assert {s["name"] for s in status["saes"]} == {"resid-topk", "mlp-topk"}
    rank0 = next(p for p in cluster.pods("saes") if p["metadata"]["name"] == f"saes-{status['attempt']}-0")
    message = json.loads(rank0["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert message["verified"] is True and message["resumedFrom"] > 0

    for sae in SAES:
        coder = load_sae(output / sae["name"])
        assert coder.d_sae == sae["dictSize"] and coder.d_in == 32
    reference = uninterrupted(volume / "stores" / "acts", tmp_path / "reference")
    for name, fvu in final_fvus(output).items():
        assert fvu == pytest.approx(reference[name], rel=0.02), (name, fvu, reference[name])
