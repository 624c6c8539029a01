"""A gang whose worker spec carries a GPU cluster's pod fields runs end to end: the pods are admitted, scheduled on
their planned nodes through the merged node affinity, mount the extra volumes and the shared model cache; a user
affinity no node meets keeps the gang waiting without pods; every rank of a dump loads a hub
model from the model cache (docs/api.md, Pods on a GPU cluster)."""

from __future__ import annotations

from gang_cluster import POOL, RACK, condition, probe_job

from interp_operator.local.testing import wait_for
from interp_workloads.store.verify import verify_store
from interp_workloads.testing import build_tiny_model, write_corpus

HUB_ID = "tiny-org/tiny-gpt2"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _create(cluster, kind: str, body: dict) -> None:
    response = cluster.api("POST", f"/api/v1/namespaces/{cluster.namespace}/{kind}", json=body)
    assert response.status_code == 201, response.text


def _gang(**fields) -> dict:
    env = probe_job()["spec"]["gang"]["env"]
    return {"env": env, **fields}


def _claim(cluster, name: str) -> None:
    _create(cluster, "persistentvolumeclaims", {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})


def test_pods_with_affinity_volumes_and_a_model_cache_run_the_gang(cluster):
    _claim(cluster, "hf-cache")
    _create(cluster, "configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca"},
                                    "data": {"ca.crt": "not a real certificate"}})
    in_any_rack = {"matchExpressions": [{"key": RACK, "operator": "In", "values": ["rack-1", "rack-2"]}]}
    gang = _gang(
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [in_any_rack]}}},
        podLabels={"team": "interp"}, podAnnotations={"example.com/owner": "interp"},
        volumes=[{"name": "scratch", "emptyDir": {}}, {"name": "ca", "configMap": {"name": "ca"}}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"},
                      {"name": "ca", "mountPath": "/etc/ssl/extra", "readOnly": True}],
        modelCache={"claimName": "hf-cache"},
    )
    cluster.create(probe_job("fields", replicas=2, gang=gang))
    job = cluster.wait_phase("fields", "Succeeded")
    assert cluster.checkpoint("fields") == {"step": 3, "worldSizes": [2]}  # a real 2-rank all-reduce ran
    pods = cluster.pods("fields")
    assert [p["spec"]["nodeName"] for p in pods] == job["status"]["placement"]["nodes"]
    for pod in pods:
        assert pod["metadata"]["labels"]["team"] == "interp"
        assert pod["metadata"]["annotations"]["example.com/owner"] == "interp"
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        assert "hf-cache" in claims
        mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert {"/scratch", "/etc/ssl/extra"} <= mounts


def test_a_gang_whose_node_affinity_no_node_meets_waits_without_pods(cluster):
    no_rack = {"matchExpressions": [{"key": RACK, "operator": "DoesNotExist"}]}
    gang = _gang(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [no_rack]}}})
    cluster.create(probe_job("nowhere", replicas=1, gang=gang))

    def unplaced():
        job = cluster.job("nowhere")
        placed = [c for c in job.get("status", {}).get("conditions", []) if c["type"] == "PodsPlaced"]
        return job if placed and placed[0]["status"] == "False" else None

    job = wait_for(unplaced, timeout=60, interval=0.2)
    assert job["status"]["phase"] == "Pending"
    assert "nodeSelector or node affinity" in condition(job, "PodsPlaced")["message"]
    assert cluster.pods("nowhere") == []


def _hub_dump(name: str, **worker) -> dict:
    """A 2-rank dump of a hub model with the hub out of reach (HF_HUB_OFFLINE): only a cache can provide it."""
    return {
        "apiVersion": "interp.dev/v1alpha1", "kind": "ActivationDump", "metadata": {"name": name},
        "spec": {
            "model": {"hubId": HUB_ID, "dtype": "float32"},
            "dataset": {"source": {"claimName": "data", "subPath": "corpus", "readOnly": True}, "format": "jsonl"},
            "contextLength": 16, "batchSize": 4, "hookPoints": ["resid_post.0"], "dtype": "float32",
            "tokensPerShard": 256, "output": {"claimName": "data", "subPath": f"stores/{name}"}, "parallelism": 2,
            "worker": {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": POOL,
                       "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}], **worker},
            "restartPolicy": {"backoffLimit": 0},
        },
    }


def test_every_rank_loads_the_hub_model_from_the_shared_model_cache(cluster):
    _claim(cluster, "hf-cache")
    # The claim holds a Hugging Face cache as a first download leaves it: a snapshot and the ref naming it.
    repo = cluster.volume("hf-cache") / "shared" / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    build_tiny_model("gpt2", repo / "snapshots" / REVISION, n_layers=1)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    corpus = cluster.volume() / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    write_corpus(corpus / "part-0.jsonl", documents=40)

    cluster.create(_hub_dump("cached", modelCache={"claimName": "hf-cache", "subPath": "shared"}))
    job = cluster.wait_phase("cached", "Succeeded", "Failed", timeout=180, plural="activationdumps")
    assert job["status"]["phase"] == "Succeeded", job["status"]
    verify_store(cluster.volume() / "stores" / "cached")

    # The reference: the same dump with each pod's private cache cannot find the model.
    cluster.create(_hub_dump("uncached"))
    job = cluster.wait_phase("uncached", "Succeeded", "Failed", timeout=180, plural="activationdumps")
    assert job["status"]["phase"] == "Failed", job["status"]
    assert "couldn't find them in the cached files" in condition(job, "Failed")["message"]
