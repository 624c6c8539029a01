"""An ActivationDump CR end to end: the operator runs the real dump workload as a gang on interp-local, a tiny model and
corpus on a volume, and the result is a store that verifies; a killed rank restarts alone and resumes."""

from __future__ import annotations

import json

import pytest
from gang_cluster import POOL, condition

from interp_operator.local.testing import wait_for
from interp_workloads.store.reader import ActivationStore
from interp_workloads.store.verify import verify_store
from interp_workloads.testing import build_tiny_model, write_corpus

PLURAL = "activationdumps"


@pytest.fixture
def volume(cluster):
    root = cluster.volume()
    if not (root / "model" / "config.json").exists():
        build_tiny_model("gpt2", root / "model", n_layers=2)
    (root / "corpus").mkdir(parents=True, exist_ok=True)
    write_corpus(root / "corpus" / "part-0.jsonl", documents=120)
    return root


def dump(name: str, parallelism: int, **spec) -> dict:
    body = {
        "apiVersion": "interp.dev/v1alpha1", "kind": "ActivationDump", "metadata": {"name": name},
        "spec": {
            "model": {"storage": {"claimName": "data", "subPath": "model"}, "dtype": "float32"},
            "dataset": {"source": {"claimName": "data", "subPath": "corpus", "readOnly": True}, "format": "jsonl"},
            "contextLength": 16, "batchSize": 4, "hookPoints": ["resid_post.0", "mlp_out.1"], "dtype": "float32",
            "tokensPerShard": 256, "shuffle": {"enabled": True, "seed": 3},
            "output": {"claimName": "data", "subPath": f"stores/{name}"},
            "parallelism": parallelism,
            "worker": {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": POOL},
            "restartPolicy": {"backoffBaseSeconds": 1, "backoffMaxSeconds": 2},
        },
    }
    body["spec"] |= spec
    return body


def test_dump_cr_produces_a_verified_store_with_status(cluster, volume):
    cluster.create(dump("store", parallelism=2))
    job = cluster.wait_phase("store", "Succeeded", "Failed", timeout=180, plural=PLURAL)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert condition(job, "Succeeded")["reason"] == "AllPodsSucceeded"
    manifest = verify_store(volume / "stores" / "store")
    assert status["manifest"] == "pvc://data/stores/store/manifest.json"
    assert status["summary"] == {"hookPoints": ["resid_post.0", "mlp_out.1"], "dModel": 32, "dtype": "float32",
                                 "tokens": manifest.tokens}
    assert status["shardsDone"] == status["shardsTotal"] == len(manifest.shards)
    assert status["bytesWritten"] == manifest.bytes
    assert status["progress"]["tokensDone"] == status["progress"]["tokensTotal"] == manifest.tokens
    assert status["progress"]["percent"] == 100
    assert status["restarts"] == 0
    pods = cluster.pods("store")
    assert len(pods) == 2 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    rank0 = next(p for p in pods if p["metadata"]["name"].endswith("-0"))
    message = json.loads(rank0["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert message["verified"] is True and message["tokens"] == manifest.tokens


def test_killed_rank_restarts_alone_and_the_store_still_verifies(cluster, volume):
    cluster.create(dump("resume", parallelism=2, batchSize=1))
    records = volume / "stores" / "resume" / "raw"
    wait_for(lambda: len(list(records.glob("shard-*.json"))) >= 2, timeout=120, interval=0.1,
             message=f"no shards written: {cluster.job('resume', PLURAL).get('status')}")
    cluster.kill("resume-1-1")
    job = cluster.wait_phase("resume", "Succeeded", "Failed", timeout=240, plural=PLURAL)
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["restarts"] == 1 and status["attempt"] == 1, "only the killed pod restarted"
    store = ActivationStore(volume / "stores" / "resume")
    store.verify()
    assert status["summary"]["tokens"] == store.tokens


def test_invalid_hook_point_fails_the_dump_at_once(cluster, volume):
    cluster.create(dump("badhook", parallelism=1, hookPoints=["resid_post.9"]))
    job = cluster.wait_phase("badhook", "Failed", timeout=120, plural=PLURAL)
    failed = condition(job, "Failed")
    assert failed["reason"] == "PermanentFailure" and "exit code 3" in failed["message"]
    assert job["status"]["restarts"] == 0
