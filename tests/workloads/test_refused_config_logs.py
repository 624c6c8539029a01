"""Every workload reports a config it refuses as one JSON log line in a pod (stderr not a terminal), like the rest
of its log, and exits 3 so the operator does not retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["train", "serve", "probe", "dump"])
def test_a_refused_config_is_one_json_error_line(module, tmp_path):
    broken = tmp_path / "cfg.json"
    broken.write_text("{not json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERP_")} | {"PYTHONSAFEPATH": "1"}
    result = subprocess.run([sys.executable, "-m", f"interp_workloads.{module}", "--config", str(broken)],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert (record["event"], record["level"], record["component"]) == ("invalid config", "error", module)
    assert record["error"]
