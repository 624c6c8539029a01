"""Helpers of the gang tests: the operator as a process, client-side cluster handles, job builders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from interp_operator.local.testing import wait_for

REPO = Path(__file__).resolve().parents[2]
POOL = {"interp.dev/test-pool": "gang"}
RACK = "topology.kubernetes.io/rack"
NODES = {"gang-1a": "rack-1", "gang-1b": "rack-1", "gang-2a": "rack-2", "gang-2b": "rack-2"}



class Operator:
    """The operator running as its own process (so a test can kill it like a crashed pod)."""

    def __init__(self, kubeconfig: Path, log: Path, workload_modules: str = "SAETrainingJob=interp_workloads.probe",
                 env: dict[str, str] | None = None):
        """``workload_modules``: INTERP_WORKLOAD_MODULES; the default runs SAE training as the gang self-test, ""
        runs every kind's real workload. ``env``: more of the operator's environment."""
        self.kubeconfig, self.log, self.workload_modules = kubeconfig, log, workload_modules
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = os.environ | {
            "KUBECONFIG": str(self.kubeconfig),
            "INTERP_WORKLOAD_MODULES": self.workload_modules,
            "HF_HUB_OFFLINE": "1",
            "INTERP_LOG_FORMAT": "json",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            **self.env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "interp_operator.cli", "-A", "--metrics-port", "0", "--health-port", "0"],
            env=env, stdout=self.log.open("a"), stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()



class Cluster:
    """Client-side helpers over the local plane's HTTP API."""

    def __init__(self, endpoint, namespace: str, plane):
        self.endpoint, self.namespace, self.plane = endpoint, namespace, plane

    def api(self, method: str, path: str, **kwargs):
        return self.endpoint.request(method, path, **kwargs)

    def create(self, body: dict) -> None:
        plural = {"SAETrainingJob": "saetrainingjobs", "ActivationDump": "activationdumps"}[body["kind"]]
        response = self.api("POST", f"/apis/interp.dev/v1alpha1/namespaces/{self.namespace}/{plural}", json=body)
        assert response.status_code == 201, response.text

    def job(self, name: str, plural: str = "saetrainingjobs") -> dict:
        return self.api("GET", f"/apis/interp.dev/v1alpha1/namespaces/{self.namespace}/{plural}/{name}").json()

    def patch_job(self, name: str, patch: dict) -> None:
        response = self.api("PATCH", f"/apis/interp.dev/v1alpha1/namespaces/{self.namespace}/saetrainingjobs/{name}",
                            data=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"})
        assert response.status_code == 200, response.text

    def pods(self, name: str) -> list[dict]:
        selector = f"interp.dev/name={name}"
        items = self.api("GET", f"/api/v1/namespaces/{self.namespace}/pods",
                         params={"labelSelector": selector}).json()["items"]
        return sorted(items, key=lambda p: p["metadata"]["name"])

    def kill(self, pod: str) -> None:
        response = self.api("POST", f"/interp-local/v1/namespaces/{self.namespace}/pods/{pod}/kill")
        assert response.status_code == 200, response.text

    def node(self, name: str, ready: bool) -> None:
        response = self.api("POST", f"/interp-local/v1/nodes/{name}/{'ready' if ready else 'not-ready'}")
        assert response.status_code == 200, response.text

    def wait_phase(self, name: str, *phases: str, timeout: float = 90, plural: str = "saetrainingjobs") -> dict:
        def reached():
            job = self.job(name, plural)
            return job if job.get("status", {}).get("phase") in phases else None

        return wait_for(reached, timeout=timeout, interval=0.2,
                        message=f"{name} did not reach {phases}: {self.job(name, plural).get('status')}")

    def volume(self, claim: str = "data") -> Path:
        """Where the claim's files are on this machine (interp-local's volumes are directories)."""
        return self.plane.state_dir / "volumes" / self.namespace / claim

    def checkpoint(self, subpath: str) -> dict:
        """The probe's checkpoint in the job's output directory ({} before the first one)."""
        path = self.plane.state_dir / "volumes" / self.namespace / "data" / subpath / "probe-checkpoint.json"
        return json.loads(path.read_text()) if path.exists() else {}



def probe_job(name: str | None = None, replicas: int = 2, steps: int = 3, step_seconds: float = 0.3,
              gpus: int = 1, **spec) -> dict:
    name = name or f"probe-{uuid.uuid4().hex[:6]}"
    gang = {"replicas": replicas, "resources": {"limits": {"nvidia.com/gpu": gpus}}, "nodeSelector": POOL,
            "env": [{"name": "INTERP_PROBE_STEPS", "value": str(steps)},
                    {"name": "INTERP_PROBE_STEP_SECONDS", "value": str(step_seconds)}]}
    body = {
        "apiVersion": "interp.dev/v1alpha1", "kind": "SAETrainingJob", "metadata": {"name": name},
        "spec": {
            "model": {"hubId": "tiny/model"},
            "data": {"onTheFly": {"dataset": {"source": {"claimName": "data", "subPath": "corpus"}}}},
            "saes": [{"name": "s", "hookPoint": "resid_post.0", "dictSize": 64, "k": 4}],
            "training": {"tokens": 4096, "batchSizeTokens": 4096},
            "output": {"claimName": "data", "subPath": name},
            "gang": gang,
            "scheduling": {"topology": {"keys": [RACK]}},
            "restartPolicy": {"backoffBaseSeconds": 1, "backoffMaxSeconds": 2, "backoffLimit": 3},
        },
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **value}
        else:
            body["spec"][key] = value
    return body



def condition(job: dict, type_: str) -> dict:
    return next(c for c in job["status"]["conditions"] if c["type"] == type_)



def settle(seconds: float = 1.0) -> None:
    time.sleep(seconds)
