from __future__ import annotations

import subprocess
import sys

import pytest

from interp_operator.cli import parse_args


def test_defaults_watch_every_namespace():
    args = parse_args([])
    assert (args.namespace, args.metrics_port, args.health_port, args.peering) == ([], 8080, 8081, None)


def test_namespaces_are_repeatable():
    assert parse_args(["-n", "a", "--namespace", "b"]).namespace == ["a", "b"]


def test_all_namespaces_and_namespace_conflict():
    with pytest.raises(SystemExit):
        parse_args(["-A", "-n", "a"])


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-P", "-m", "interp_operator.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("interp-operator 0.1.0")
