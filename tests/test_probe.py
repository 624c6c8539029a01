"""The gang self-test workload: standalone, a real 3-process gloo gang, resume at a new world size, bad config."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gang(tmp_path: Path, world: int, steps: int) -> list[subprocess.CompletedProcess]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"name": "probe", "namespace": "t", "paths": {"output": str(tmp_path)},
                                  "probe": {"steps": steps, "stepSeconds": 0}}))
    port = free_port()
    procs = []
    for rank in range(world):
        env = os.environ | {"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": str(port), "INTERP_LOG_FORMAT": "json"}
        procs.append(subprocess.Popen([sys.executable, "-P", "-m", "interp_workloads.probe", "--config", str(config)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]


def test_standalone_single_process(tmp_path):
    results = gang(tmp_path, 1, 2)
    assert results[0].returncode == 0, results[0].stderr
    assert json.loads((tmp_path / "probe-checkpoint.json").read_text()) == {"step": 2, "worldSizes": [1]}


def test_gang_all_reduces_and_resumes_at_a_new_world_size(tmp_path):
    first = gang(tmp_path, 2, 2)
    assert [r.returncode for r in first] == [0, 0], [r.stderr for r in first]
    second = gang(tmp_path, 3, 5)  # the next attempt is larger: it resumes at step 2
    assert [r.returncode for r in second] == [0, 0, 0], [r.stderr for r in second]
    assert json.loads((tmp_path / "probe-checkpoint.json").read_text()) == {"step": 5, "worldSizes": [2, 3]}
    lines = [json.loads(line) for line in second[2].stderr.splitlines() if line.startswith("{")]
    joined = next(line for line in lines if line["event"] == "joined")
    assert (joined["rank"], joined["world_size"], joined["resumed_at_step"]) == (2, 3, 2)
    assert [line["all_reduce"] for line in lines if line["event"] == "step"] == [6.0, 6.0, 6.0]


def test_invalid_config_exits_3(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"probe": {"steps": 0}}))
    result = subprocess.run([sys.executable, "-P", "-m", "interp_workloads.probe", "--config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 3 and "steps must be >= 1" in result.stderr
