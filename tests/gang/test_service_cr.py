"""An InterpInferenceService CR end to end on interp-local: the operator runs the real server with its bearer tokens
from a Secret; it becomes Ready; generate with a steering vector and an SAE clamp answers through the Service's
address; the scale subresource adds a replica; a changed spec rolls the replicas one by one (maxSurge 0) with one
ready throughout and never more pods than replicas; a crashed replica is replaced alone; a bad SAE ends Failed with
the reason."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import torch
from gang_cluster import POOL, condition
from safetensors.torch import save_file

from interp_operator.local.testing import wait_for
from interp_workloads.instrument import SparseAutoencoder
from interp_workloads.spec.sae import SAEConfig
from interp_workloads.testing import build_tiny_model

PLURAL = "interpinferenceservices"
TOKEN = "s3cret-token"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


@pytest.fixture
def volume(cluster):
    root = cluster.volume()
    if not (root / "model" / "config.json").exists():
        build_tiny_model("gpt2", root / "model", n_layers=2)
    torch.manual_seed(0)
    SparseAutoencoder(SAEConfig(d_in=32, d_sae=64)).save(root / "saes" / "s")
    (root / "vectors").mkdir(parents=True, exist_ok=True)
    save_file({"vector": torch.linspace(-1, 1, 32)}, str(root / "vectors" / "tone.safetensors"))
    return root


def service(name: str, replicas: int = 1, **spec) -> dict:
    return {
        "apiVersion": "interp.dev/v1alpha1", "kind": "InterpInferenceService", "metadata": {"name": name},
        "spec": {
            "model": {"storage": {"claimName": "data", "subPath": "model", "readOnly": True}, "dtype": "float32"},
            "replicas": replicas,
            "auth": {"disabled": True},
            "limits": {"maxNewTokens": 8},
            "saes": [{"name": "s", "hookPoint": "resid_post.1",
                      "storage": {"claimName": "data", "subPath": "saes/s", "readOnly": True}}],
            "steeringVectors": [{"name": "tone", "hookPoint": "resid_post.0",
                                 "storage": {"claimName": "data", "subPath": "vectors/tone.safetensors",
                                             "readOnly": True}}],
            "worker": {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": POOL},
        } | spec,
    }


def _create(cluster, body: dict) -> None:
    response = cluster.api("POST", f"/apis/interp.dev/v1alpha1/namespaces/{cluster.namespace}/{PLURAL}", json=body)
    assert response.status_code == 201, response.text


def _ready_pods(cluster, name: str) -> list[dict]:
    return [p for p in cluster.pods(name) if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]


def _through_service(cluster, url: str) -> str:
    """The Service's URL with its host resolved as a pod resolves it (interp-local's cluster hosts table)."""
    parts = urlsplit(url)
    table = json.loads(cluster.plane.kubelet.hosts_file.read_text())
    return f"http://{table[parts.hostname][0]}:{parts.port}"


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is installed with the dev tools (make install)")
def test_service_cr_serves_steered_generation_scales_and_rolls(cluster, volume, tmp_path):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tiny-tokens"},
              "data": {"tokens": base64.b64encode(f"{TOKEN}\n".encode()).decode()}}
    assert cluster.api("POST", f"/api/v1/namespaces/{cluster.namespace}/secrets", json=secret).status_code == 201
    _create(cluster, service("tiny", auth={"secretName": "tiny-tokens"}))
    obj = cluster.wait_phase("tiny", "Ready", "Failed", timeout=180, plural=PLURAL)
    status = obj["status"]
    assert status["phase"] == "Ready", status
    assert condition(obj, "Ready")["status"] == "True"
    assert status["readyReplicas"] == status["replicas"] == status["updatedReplicas"] == 1
    assert status["url"] == f"http://tiny.{cluster.namespace}.svc:8000"
    container = cluster.pods("tiny")[0]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    url = wait_for(lambda: _through_service(cluster, status["url"]), timeout=30, interval=0.3)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"prompt": "The quick brown", "max_new_tokens": 6, "temperature": 0, "ignore_eos": True}
    assert httpx.post(url + "/v1/generate", json=body, timeout=30).status_code == 401, "the Secret's token is needed"
    plain = httpx.post(url + "/v1/generate", json=body, headers=headers, timeout=30)
    assert plain.status_code == 200, plain.text
    steered = httpx.post(url + "/v1/generate", headers=headers, timeout=30, json={**body, "interventions": [
        {"kind": "vector", "name": "tone", "scale": 8},
        {"kind": "sae", "hook": "resid_post.1", "sae": "s", "edits": [{"feature": 5, "op": "clamp", "value": 10}]}]})
    assert steered.status_code == 200, steered.text
    assert steered.json()["generations"][0]["tokens"] != plain.json()["generations"][0]["tokens"]
    assert len(steered.json()["generations"][0]["tokens"]) == 6

    # The scale subresource, through kubectl itself.
    base = f"/apis/interp.dev/v1alpha1/namespaces/{cluster.namespace}/{PLURAL}/tiny"
    merge = {"Content-Type": "application/merge-patch+json"}
    scaled = subprocess.run([KUBECTL, "--kubeconfig", str(cluster.endpoint.kubeconfig), "--cache-dir",
                             str(tmp_path / "kube-cache"), "-n", cluster.namespace, "scale", "iis/tiny",
                             "--replicas=2"], capture_output=True, text=True, timeout=60)
    assert scaled.returncode == 0 and "scaled" in scaled.stdout, scaled.stderr
    wait_for(lambda: len(_ready_pods(cluster, "tiny")) == 2, timeout=180, interval=0.3,
             message=f"not 2 ready replicas: {cluster.job('tiny', PLURAL).get('status')}")
    obj = cluster.wait_phase("tiny", "Ready", timeout=60, plural=PLURAL)
    assert obj["status"]["readyReplicas"] == 2
    scale = cluster.api("GET", base + "/scale").json()
    assert scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2
    assert scale["status"]["selector"] == obj["status"]["selector"]
    old_pods = {p["metadata"]["name"] for p in cluster.pods("tiny")}

    # A changed spec rolls the replicas (maxSurge 0, maxUnavailable 1: the default, which needs no spare GPU).
    response = cluster.api("PATCH", base, data=json.dumps({"spec": {"limits": {"maxNewTokens": 9}}}), headers=merge)
    assert response.status_code == 200, response.text
    generation = response.json()["metadata"]["generation"]
    deadline, seen = time.monotonic() + 240, []
    while True:
        pods = [p for p in cluster.pods("tiny") if p["status"].get("phase") not in ("Succeeded", "Failed")]
        ready = _ready_pods(cluster, "tiny")
        assert len(ready) >= 1, f"no replica ready during the rollout: {[p['metadata']['name'] for p in pods]}"
        assert len(pods) <= 2, f"more pods than replicas with maxSurge 0: {[p['metadata']['name'] for p in pods]}"
        seen.append(len(ready))
        obj = cluster.job("tiny", PLURAL)
        done = obj["status"].get("observedGeneration") == generation and obj["status"]["phase"] == "Ready"
        if done and obj["status"]["updatedReplicas"] == 2:
            break
        assert time.monotonic() < deadline, f"the rollout did not finish: {obj['status']}"
        time.sleep(0.2)
    assert 1 in seen, "the rollout never took a replica down (was it a rollout at all?)"
    new_pods = {p["metadata"]["name"] for p in _ready_pods(cluster, "tiny")}
    assert len(new_pods) == 2 and not new_pods & old_pods
    assert condition(obj, "Progressing")["reason"] == "Complete"

    # A replica that crashes is replaced alone: the other keeps serving, the replacement has a name of its own.
    crashed, survivor = sorted(new_pods)
    cluster.kill(crashed)
    wait_for(lambda: cluster.job("tiny", PLURAL)["status"].get("restarts") == 1, timeout=60, interval=0.2,
             message=f"the crash was not seen: {cluster.job('tiny', PLURAL).get('status')}")
    wait_for(lambda: len(_ready_pods(cluster, "tiny")) == 2, timeout=180, interval=0.3,
             message=f"the crashed replica was not replaced: {cluster.job('tiny', PLURAL).get('status')}")
    now_ready = {p["metadata"]["name"] for p in _ready_pods(cluster, "tiny")}
    assert survivor in now_ready and crashed not in now_ready and len(now_ready - new_pods) == 1
    url = wait_for(lambda: _through_service(cluster, obj["status"]["url"]), timeout=30, interval=0.3)
    info = httpx.get(url + "/v1/models", headers=headers, timeout=30)
    assert info.status_code == 200, info.text


def test_a_bad_sae_ends_in_a_failed_condition_not_a_crash_loop(cluster, volume):
    SparseAutoencoder(SAEConfig(d_in=16, d_sae=64)).save(volume / "saes" / "bad")
    body = service("badsae")
    body["spec"]["saes"][0]["storage"]["subPath"] = "saes/bad"
    _create(cluster, body)
    obj = cluster.wait_phase("badsae", "Failed", "Ready", timeout=180, plural=PLURAL)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PermanentFailure" and "width" in ready["message"]
    assert obj["status"]["restarts"] == 0, "no crash loop"
