from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from interp_operator.cli import parse_args


def test_defaults_watch_every_namespace():
    args = parse_args([])
    assert (args.namespace, args.metrics_port, args.health_port, args.peering) == ([], 8080, 8081, None)


def test_peering_replicas_get_distinct_priorities_unless_given():
    # kopf pauses every peer when the highest priority is shared, so two replicas with one default would both idle.
    drawn = {parse_args(["--peering", "p"]).priority for _ in range(20)}
    assert len(drawn) == 20 and all(priority > 0 for priority in drawn)
    assert parse_args(["--peering", "p", "--priority", "7"]).priority == 7
    assert parse_args([]).priority is None
    with pytest.raises(SystemExit):
        parse_args(["--priority", "7"])


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


def test_the_operator_serves_its_metrics_securely_when_asked(kube_endpoint, tmp_path):
    """The command line as the chart runs it, against a real API server: HTTPS, and no scrape without a token. The
    local plane serves no TokenReview, so a token's review fails and the scrape is refused with the reason."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"KUBECONFIG": str(kube_endpoint.kubeconfig), "INTERP_METRICS_SECURE": "true",
                        "INTERP_LOG_FORMAT": "json"}
    log = tmp_path / "operator.log"
    process = subprocess.Popen([sys.executable, "-P", "-m", "interp_operator.cli", "-n", "metrics-cli-test",
                                "--metrics-port", str(port), "--health-port", "0"],
                               env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                answers = [https_status(port, insecure, token) for token in (None, "some-token")]
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        assert answers[0] == (401, "Unauthorized: a bearer token is required (Authorization: Bearer <token>)")
        assert answers[1][0] == 500 and "TokenReview failed" in answers[1][1]
    finally:
        process.terminate()
        process.wait(30)


def https_status(port: int, context: ssl.SSLContext, token: str | None) -> tuple[int, str]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        return response.status, response.read().decode().strip()
    finally:
        connection.close()


@pytest.mark.parametrize(("raw", "interval"), [("", None), ("2.5", 2.5), ("1", 1.0)])
def test_the_progress_interval_comes_from_the_environment(monkeypatch, raw, interval):
    from interp_operator.handlers import operator_config

    monkeypatch.setenv("INTERP_PROGRESS_INTERVAL_S", raw)
    assert operator_config().progress_interval_s == interval


@pytest.mark.parametrize("raw", ["0", "-3", "soon", "7200"])
def test_a_progress_interval_that_cannot_work_is_refused_by_name(monkeypatch, raw):
    from interp_operator.handlers import operator_config

    monkeypatch.setenv("INTERP_PROGRESS_INTERVAL_S", raw)
    with pytest.raises(ValueError, match="INTERP_PROGRESS_INTERVAL_S"):
        operator_config()
