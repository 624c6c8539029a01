"""interpctl end to end, in subprocesses, on interp-local with the real operator; and port-forwarding to a pod."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import yaml

from interp_operator.local.testing import wait_for
from interp_operator.sdk import shortforms
from interp_operator.sdk.inference import InferenceClient
from interp_workloads.store.verify import verify_store

INTERPCTL = [sys.executable, "-P", "-m", "interp_operator.sdk.cli", "-n", "sdk"]


def interpctl(env: dict, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*INTERPCTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


def test_dump_through_the_cli_then_status_logs_events_results_and_delete(cli_env, volume, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    created = interpctl(cli_env, "dump", name, "--model", "pvc://data/model", "--dataset", "pvc://data/corpus",
                        "--hook", "resid_post.0", "--output", f"pvc://data/stores/{name}",
                        "--dtype", "float32", "--context-length", "16", "--batch-size", "4",
                        "--tokens-per-shard", "256", "--gpus", "1", "--wait", "--timeout", "150")
    assert created.returncode == 0, created.stderr
    assert created.stdout.splitlines()[0] == f"actdump/{name} created"
    assert "100%" in created.stderr, "the progress bar is drawn on stderr"

    status = interpctl(cli_env, "status", name, "-o", "json")
    assert status.returncode == 0, status.stderr
    reported = json.loads(status.stdout)
    manifest = verify_store(volume / "stores" / name)
    assert reported["phase"] == "Succeeded" and reported["summary"]["tokens"] == manifest.tokens
    text = interpctl(cli_env, "status", f"actdump/{name}").stdout
    assert f"ActivationDump {name}: Succeeded" in text and "manifest" in text

    listed = json.loads(interpctl(cli_env, "get", "actdump", "-o", "json").stdout)
    assert name in [item["metadata"]["name"] for item in listed]
    events = interpctl(cli_env, "events", name)
    assert "GangCreated" in events.stdout and "AllPodsSucceeded" in events.stdout
    logs = interpctl(cli_env, "logs", name, "--rank", "0")
    assert logs.returncode == 0 and "manifest" in logs.stdout.lower(), logs.stdout[-2000:]

    pulled = interpctl(cli_env, "results", "pull", name, str(tmp_path / "copy"), "-o", "json")
    assert pulled.returncode == 0, pulled.stderr
    files = json.loads(pulled.stdout)["files"]
    assert "manifest.json" in files
    assert verify_store(tmp_path / "copy").tokens == manifest.tokens, "the copy is a complete, verified store"
    path = interpctl(cli_env, "results", "path", name).stdout.strip()
    assert Path(path) == volume / "stores" / name

    assert interpctl(cli_env, "delete", f"actdump/{name}").returncode == 0
    wait_for(lambda: interpctl(cli_env, "status", f"actdump/{name}").returncode == 3, timeout=30, interval=0.5,
             message="the deleted dump is still found")
    missing = interpctl(cli_env, "status", f"actdump/{name}")
    assert missing.returncode == 3 and "not found" in missing.stderr


def test_submit_from_stdin_watch_and_profile_a_training_job(cli_env):
    name = f"clitrain-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "metadata": {"name": name},
        "spec": {
            "model": {"hubId": "tiny/model"},
            "data": {"onTheFly": {"dataset": {"source": {"claimName": "data", "subPath": "corpus"}}}},
            "saes": [{"name": "s", "hookPoint": "resid_post.0", "dictSize": 64, "k": 4}],
            "training": {"tokens": 4096, "batchSizeTokens": 4096},
            "output": {"claimName": "data", "subPath": name},
            "gang": {"replicas": 2, "resources": {"limits": {"nvidia.com/gpu": 1}},
                     "env": [{"name": "INTERP_PROBE_STEPS", "value": "8"},
                             {"name": "INTERP_PROBE_STEP_SECONDS", "value": "0.3"}]},
        },
    }
    submitted = interpctl(cli_env, "submit", "-", "-o", "name", stdin=yaml.safe_dump(body))
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.strip() == f"saejob/{name}"
    profiled = interpctl(cli_env, "profile", name, "--steps", "2-4")
    assert profiled.returncode == 0, profiled.stderr
    assert f"traces: pvc://data/{name}/profiles/profile-rank<R>-steps-2-4.json" in profiled.stdout
    watched = interpctl(cli_env, "watch", f"saejob/{name}", "--timeout", "90", timeout=120)
    phases = [line.split()[2] for line in watched.stdout.splitlines()]
    # The gang self-test stands in for the trainer: it runs and ends, but leaves no verified exports, so whether
    # the operator calls that Succeeded depends on the trainer's checks. watch's exit code must say which it was.
    assert "Running" in phases and phases[-1] in ("Succeeded", "Failed"), watched.stdout
    assert watched.returncode == (0 if phases[-1] == "Succeeded" else 1), watched.stdout
    stored = json.loads(interpctl(cli_env, "get", "saejob", name, "-o", "json").stdout)
    assert stored["metadata"]["annotations"]["interp.dev/profile-steps"] == "2-4"

    invalid = interpctl(cli_env, "submit", "-", stdin=yaml.safe_dump({**body, "metadata": {"name": "x" * 60}}))
    assert invalid.returncode == 2 and "metadata.name must be at most 48 characters" in invalid.stderr


def test_port_forward_reaches_a_server_pod(sdk, sdk_endpoint):
    # A stand-in server pod with the labels of an InterpInferenceService's replica (no such object: its operator
    # would replace the pod with its own).
    name = f"pf-{uuid.uuid4().hex[:6]}"
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{name}-1-0", "labels": {"interp.dev/kind": "InterpInferenceService",
                                                          "interp.dev/name": name, "interp.dev/rank": "0",
                                                          "interp.dev/attempt": "1"}},
           "spec": {"containers": [{"name": "workload", "image": "local",
                                    "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8123"],
                                    "env": [pod_ip],
                                    "readinessProbe": {"tcpSocket": {"port": 8123}, "periodSeconds": 0.2}}]}}
    response = sdk_endpoint.request("POST", "/api/v1/namespaces/sdk/pods", json=pod)
    assert response.status_code == 201, response.text
    try:
        wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True"
                             for c in (sdk.pods("iis", name)[0].get("status") or {}).get("conditions") or []),
                 timeout=30, interval=0.2, message="the server pod never became ready")
        with sdk.port_forward("iis", name, 8123) as forward:
            answer = httpx.get(forward.url + "/", timeout=10)
            assert answer.status_code == 200 and "Directory listing" in answer.text
            assert httpx.get(forward.url + "/", timeout=10).status_code == 200, "a second connection works too"
    finally:
        sdk_endpoint.request("DELETE", f"/api/v1/namespaces/sdk/pods/{name}-1-0")


def test_an_inference_service_is_reached_through_a_port_forward(sdk, cli_env):
    # The real server workload in a pod of an InterpInferenceService; this machine cannot resolve the service's
    # in-cluster URL, so the client forwards a local port to the ready pod.
    name = f"iis-{uuid.uuid4().hex[:6]}"
    with socket.socket() as probe:  # the server binds every address: a free port keeps it off others' servers
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = sdk.create(shortforms.serve(name, model_location="pvc://data/model", no_auth=True, port=port,
                                          model={"storage": {"claimName": "data", "subPath": "model"},
                                                 "dtype": "float32"}))
    try:
        status = service.wait(timeout=120, progress=False)
        assert status.phase == "Ready" and status.url == f"http://{name}.sdk.svc:{port}"
        with InferenceClient.for_service(sdk, name, timeout=30) as server:
            assert server.url.startswith("http://127.0.0.1:")
            server.wait_ready(timeout=90)
            out = server.generate("the cat", max_new_tokens=3, temperature=0, ignore_eos=True)
            assert len(out.generations[0].tokens) == 3
        shown = interpctl(cli_env, "get", "iis", name, "-o", "json")
        assert json.loads(shown.stdout)["status"]["phase"] == "Ready"
        # A service suspends by scaling to zero and resumes at the replica count it had.
        assert interpctl(cli_env, "suspend", f"iis/{name}").returncode == 0
        suspended = service.refresh()
        assert suspended.raw["spec"]["replicas"] == 0
        assert suspended.raw["metadata"]["annotations"]["interp.dev/suspended-replicas"] == "1"
        assert interpctl(cli_env, "resume", f"iis/{name}").returncode == 0
        resumed = service.refresh().raw
        assert resumed["spec"]["replicas"] == 1 and "interp.dev/suspended-replicas" not in resumed["metadata"].get(
            "annotations", {})
    finally:
        service.delete()
