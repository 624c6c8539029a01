"""Differential tier: the local control plane's custom-resource semantics and format tests (table cells, validation
messages, OpenAPI documents), run unchanged against the real API
server. Where the two differ, the emulator is fixed or the difference is listed in docs/local-control-plane.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEMANTICS = ["tests/local/test_custom_resources.py", "tests/local/test_watch.py", "tests/local/test_api_formats.py"]

pytestmark = pytest.mark.conformance


def test_local_plane_custom_resource_semantics_hold_on_the_real_server(real_apiserver):
    env = os.environ | {"INTERP_TEST_KUBECONFIG": str(real_apiserver), "PYTHONSAFEPATH": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=--import-mode=importlib",
         *SEMANTICS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert result.returncode == 0, f"semantics differ on the real server: {summary}\n{result.stdout[-4000:]}"
    assert " passed" in summary and "failed" not in summary, summary
