"""python -m interp_workloads.serve from an InterpInferenceService manifest with local paths, and its exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
import yaml
from safetensors.torch import save_file

from interp_workloads.instrument import SparseAutoencoder
from interp_workloads.spec.sae import SAEConfig
from interp_workloads.testing import build_tiny_model


def _manifest(tmp_path: Path, model: Path, sae: Path, vector: Path, port: int) -> Path:
    doc = {"apiVersion": "interp.dev/v1alpha1", "kind": "InterpInferenceService", "metadata": {"name": "tiny"},
           "spec": {"model": {"storage": {"uri": f"file://{model}"}, "dtype": "float32"}, "port": port,
                    "auth": {"disabled": True}, "limits": {"maxNewTokens": 4},
                    "saes": [{"name": "s", "hookPoint": "resid_post.1", "storage": {"uri": f"file://{sae}"}}],
                    "steeringVectors": [{"name": "tone", "hookPoint": "resid_post.0",
                                         "storage": {"uri": f"file://{vector}"}}]}}
    path = tmp_path / "iis.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(args: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONSAFEPATH": "1", "HF_HUB_OFFLINE": "1",
           "INTERP_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log")}
    return subprocess.Popen([sys.executable, "-m", "interp_workloads.serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serves_a_manifest_with_local_paths_and_refuses_a_bad_sae_with_exit_3(tmp_path):
    model = build_tiny_model("gpt2", tmp_path / "model")
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64)).save(tmp_path / "sae")
    vector = tmp_path / "tone.safetensors"
    save_file({"vector": torch.ones(32)}, str(vector))
    port = _port()
    proc = _run(["--config", str(_manifest(tmp_path, model, sae, vector, port)), "--host", "127.0.0.1",
                 "--device", "cpu"], tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        assert httpx.get(url + "/healthz").status_code == 200
        r = httpx.post(url + "/v1/generate", json={"prompt": "The quick", "max_new_tokens": 3, "temperature": 0,
                                                    "interventions": [{"kind": "vector", "name": "tone"}]})
        assert r.status_code == 200, r.text
        assert [v["name"] for v in httpx.get(url + "/v1/vectors").json()] == ["tone"]
    finally:
        proc.terminate()
        proc.wait(30)
    logged = proc.stdout.read().decode() if proc.stdout else ""
    assert "/v1/generate" in logged and "/healthz" not in logged, "requests are logged, successful probes not"

    # An SAE of the wrong width: exit 3 and a termination message with the reason.
    SparseAutoencoder(SAEConfig(d_in=16, d_sae=64)).save(tmp_path / "sae")
    proc = _run(["--config", str(_manifest(tmp_path, model, sae, vector, _port())), "--device", "cpu"], tmp_path)
    assert proc.wait(120) == 3
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message["error"] == "SAELoadFailed" and "width" in message["message"]

    proc = _run(["--config", str(_manifest(tmp_path, tmp_path / "missing", sae, vector, _port()))], tmp_path)
    assert proc.wait(120) == 3
    assert json.loads((tmp_path / "termination-log").read_text())["error"] == "ModelLoadFailed"
