"""``interp-local up`` in a subprocess: ready line, kubeconfig, pods, faults, clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp_operator.local.client import session_for
from interp_operator.local.testing import wait_for


def test_up_serves_until_sigterm(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    command = [sys.executable, "-m", "interp_operator.local.cli", "up", "--kubeconfig", str(kubeconfig),
               "--node", "gpu-0:gpu=2,zone=z1,rack=r1", "--node", "cpu-0:cpu=4", "--state-dir",
               str(tmp_path / "state"), "--restart-backoff", "0.2"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert line.startswith("interp-local ready: server=https://127.0.0.1:"), line
        assert f"kubeconfig={kubeconfig}" in line and "nodes=gpu-0,cpu-0" in line
        base, session = session_for(kubeconfig)
        nodes = session.get(f"{base}/api/v1/nodes", verify=session.verify).json()["items"]
        gpu = next(n for n in nodes if n["metadata"]["name"] == "gpu-0")
        assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
        assert gpu["metadata"]["labels"]["topology.kubernetes.io/zone"] == "z1"
        pod = {"metadata": {"name": "sleeper"}, "spec": {"containers": [
            {"name": "main", "image": "local", "command": [sys.executable, "-c", "import time; time.sleep(600)"]}]}}
        session.post(f"{base}/api/v1/namespaces/default/pods", json=pod, verify=session.verify)

        def status():
            return session.get(f"{base}/api/v1/namespaces/default/pods/sleeper", verify=session.verify).json()

        wait_for(lambda: status()["status"].get("phase") == "Running", timeout=20)
        fault = subprocess.run([sys.executable, "-m", "interp_operator.local.cli", "fault", "--kubeconfig",
                                str(kubeconfig), "kill-pod", "default/sleeper"], capture_output=True, text=True,
                               env=env, timeout=60)
        assert fault.returncode == 0 and "signalled 1 process" in fault.stdout, fault.stderr
        wait_for(lambda: status()["status"]["containerStatuses"][0]["restartCount"] == 1, timeout=20)
        wait_for(lambda: "running" in status()["status"]["containerStatuses"][0]["state"], timeout=20)
        pid = _pid_of(tmp_path / "state")
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        time.sleep(0.2)
        assert not _alive(pid), "the pod's process outlived the control plane"
    finally:
        if server.poll() is None:
            server.kill()


def _pid_of(state_dir):
    """The pid of the sleeper's current process, from /proc (its command line names the sleep)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if b"import time; time.sleep(600)" in cmdline and str(state_dir).encode() in environ:
                return int(entry)
    raise AssertionError("no sleeper process found")


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_bad_node_spec_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "interp_operator.local.cli", "up", "--kubeconfig",
                           str(tmp_path / "k"), "--node", "n:warp=9"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONSAFEPATH": "1"}, timeout=60)
    assert done.returncode == 2 and "unknown node attribute 'warp'" in done.stderr


@pytest.mark.parametrize(("flag", "value", "said"), [("--gpus-per-node", "-1", "must be 0 or more, got -1"),
                                                      ("--nodes", "two", "expected a whole number, got 'two'")])
def test_a_count_that_cannot_be_is_refused_before_anything_starts(tmp_path, flag, value, said):
    done = subprocess.run([sys.executable, "-m", "interp_operator.local.cli", "up", "--kubeconfig",
                           str(tmp_path / "k"), flag, value], capture_output=True, text=True,
                          env={**os.environ, "PYTHONSAFEPATH": "1"}, timeout=60)
    assert done.returncode == 2 and flag in done.stderr and said in done.stderr, done.stderr
    assert not (tmp_path / "k").exists()
