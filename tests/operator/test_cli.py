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


def test_metrics_are_plain_unless_asked(monkeypatch):
    monkeypatch.delenv("INTERP_METRICS_SECURE", raising=False)
    monkeypatch.delenv("INTERP_METRICS_CERT_DIR", raising=False)
    args = parse_args([])
    assert (args.metrics_secure, args.metrics_cert_dir) == (False, None)
    assert parse_args(["--metrics-secure"]).metrics_secure is True


def test_metrics_secure_and_cert_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_METRICS_SECURE", "true")
    monkeypatch.setenv("INTERP_METRICS_CERT_DIR", str(tmp_path))
    args = parse_args([])
    assert (args.metrics_secure, args.metrics_cert_dir) == (True, tmp_path)
    assert parse_args(["--no-metrics-secure", "--metrics-cert-dir", ""]).metrics_secure is False


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--metrics-cert-dir", "."], {}, "--metrics-cert-dir needs --metrics-secure"),
    (["--metrics-secure", "--metrics-cert-dir", "/nonexistent/certs"], {}, "is not a directory"),
    ([], {"INTERP_METRICS_SECURE": "maybe"}, "INTERP_METRICS_SECURE must be true or false"),
])
def test_bad_metrics_settings_are_refused_by_name(argv, env, message, monkeypatch, capsys):
    for name in ("INTERP_METRICS_SECURE", "INTERP_METRICS_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err
