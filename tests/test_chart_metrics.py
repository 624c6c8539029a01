"""The chart's metrics endpoint: secure by default (HTTPS, reviewed scrapes on 8443), with a Secret's certificate or
a self-signed one, or plain HTTP; the Service, ServiceMonitor, NetworkPolicy and `helm test` pod that follow it.

The operator started with the Deployment's own arguments, and the `helm test` pod's own script against it, run on
this machine at the end (interp-local for the operator's API client).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helm_chart import FULLNAME, NAMESPACE, SCENARIOS, TOKEN_DIR, render, the

from interp_operator.local.testing import wait_for

CERT_DIR = "/etc/interp-operator/metrics-certs"


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def endpoint(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (scrape,) = the(objects, "ServiceMonitor")["spec"]["endpoints"]
    return scrape


# ------------------------------------------------------------------------------------------ rendered


def test_secure_by_default_with_a_self_signed_certificate_for_the_pod_ip() -> None:
    container = operator_container(render({}))
    assert "--metrics-secure" in container["args"] and "--metrics-cert-dir" not in container["args"]
    (pod_ip,) = [e for e in container["env"] if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_cert_secret_is_mounted_read_only_and_passed_as_the_cert_dir() -> None:
    objects = render(SCENARIOS["metrics-cert-secret"])
    container = operator_container(objects)
    args = container["args"]
    assert args[args.index("--metrics-cert-dir") + 1] == CERT_DIR
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == CERT_DIR]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in the(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "metrics-tls"
    assert secret["defaultMode"] == 0o440
    assert {item["key"] for item in secret["items"]} == {"tls.crt", "tls.key"}
    assert "POD_IP" not in {e["name"] for e in container["env"]}, "the Secret's certificate names its hosts"


def test_plain_metrics_say_so_explicitly() -> None:
    objects = render(SCENARIOS["plain-metrics"])
    container = operator_container(objects)
    assert "--no-metrics-secure" in container["args"] and "--metrics-secure" not in container["args"]
    assert "POD_IP" not in {e["name"] for e in container["env"]}
    assert the(objects, "Service")["spec"]["ports"][0]["appProtocol"] == "http"


def test_service_and_network_policy_follow_the_metrics_port() -> None:
    values = {"metrics": {"port": 9443, "service": {"port": 443}}, "networkPolicy": {"enabled": True}}
    objects = render(values)
    ports = {p["name"]: p["containerPort"] for p in operator_container(objects)["ports"]}
    assert ports["metrics"] == 9443
    (service_port,) = the(objects, "Service")["spec"]["ports"]
    assert (service_port["port"], service_port["targetPort"]) == (443, "metrics")
    (ingress,) = the(objects, "NetworkPolicy")["spec"]["ingress"]
    assert {"port": "metrics", "protocol": "TCP"} in ingress["ports"]
    test_pod = the(objects, "Pod")["spec"]["containers"][0]
    assert test_pod["command"][-1] == f"https://{FULLNAME}-metrics.{NAMESPACE}.svc:443/metrics"


def test_service_monitor_of_the_self_signed_endpoint() -> None:
    scrape = endpoint(render(SCENARIOS["service-monitor"]))
    assert scrape["scheme"] == "https"
    assert scrape["bearerTokenFile"] == TOKEN_DIR + "/token"
    assert scrape["tlsConfig"] == {"insecureSkipVerify": True}


def test_service_monitor_verifies_the_cert_secret_by_its_ca() -> None:
    scrape = endpoint(render(SCENARIOS["metrics-cert-secret"]))
    assert scrape["tlsConfig"] == {"ca": {"secret": {"name": "metrics-tls", "key": "ca.crt"}},
                                   "serverName": f"{FULLNAME}-metrics.{NAMESPACE}.svc"}


def test_service_monitor_authorization_replaces_the_token_file() -> None:
    authorization = {"type": "Bearer", "credentials": {"name": "prom-token", "key": "token"}}
    scrape = endpoint(render({"metrics": {"serviceMonitor": {"enabled": True, "authorization": authorization}}}))
    assert scrape["authorization"] == authorization
    assert "bearerTokenFile" not in scrape


def test_plain_service_monitor_scrapes_http() -> None:
    scrape = endpoint(render({"metrics": {"secure": False, "serviceMonitor": {"enabled": True}}}))
    assert not {"scheme", "tlsConfig", "bearerTokenFile", "authorization"} & scrape.keys()


def test_helm_test_pod_scrapes_with_the_scheme_of_the_endpoint() -> None:
    secure = the(render({}), "Pod")["spec"]
    assert secure["containers"][0]["command"][-1] == f"https://{FULLNAME}-metrics.{NAMESPACE}.svc:8443/metrics"
    assert secure["automountServiceAccountToken"] is False, "its scrape carries no token: it expects a 401"
    plain = the(render(SCENARIOS["plain-metrics"]), "Pod")["spec"]
    assert plain["containers"][0]["command"][-1] == f"http://{FULLNAME}-metrics.{NAMESPACE}.svc:8080/metrics"


# ------------------------------------------------- the operator, as the Deployment runs it, and helm test


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serving_certificate(directory: Path) -> bytes:
    """A certificate for 127.0.0.1, as cert-manager would write it into a kubernetes.io/tls Secret."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metrics-from-secret")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "tls.crt").write_bytes(pem)
    (directory / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return pem


@pytest.fixture
def run_operator(kube_endpoint: Any, tmp_path: Path) -> Iterator[Any]:
    """Start the operator with the Deployment's arguments for these values (watching a namespace of its own, so it
    reconciles nothing of other tests), its metrics on a free port; yield that port."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(values: dict[str, Any], cert_dir: Path | None = None) -> int:
        namespace = f"metrics-{uuid.uuid4().hex[:6]}"
        objects = render({**values, "replicas": 1, "watchNamespaces": [namespace]})
        container = operator_container(objects)
        args, port = list(container["args"]), free_port()
        args[args.index("--metrics-port") + 1] = str(port)
        args[args.index("--health-port") + 1] = "0"
        if cert_dir is not None:
            args[args.index("--metrics-cert-dir") + 1] = str(cert_dir)
        env = os.environ | {"KUBECONFIG": str(kube_endpoint.kubeconfig), "HF_HUB_OFFLINE": "1"}
        env |= {e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"] != "HOME"}
        log = (tmp_path / f"operator-{len(processes)}.log").open("w")
        processes.append(subprocess.Popen([sys.executable, "-P", "-m", "interp_operator.cli", *args], env=env,
                                          stdout=log, stderr=subprocess.STDOUT))

        def listening() -> bool:
            assert processes[-1].poll() is None, (tmp_path / f"operator-{len(processes) - 1}.log").read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, timeout=60, message="the operator never served metrics")
        return port

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def helm_test(objects: list[dict[str, Any]], url: str) -> subprocess.CompletedProcess[str]:
    """The `helm test` pod's own command, pointed at ``url`` instead of the Service."""
    command = the(objects, "Pod")["spec"]["containers"][0]["command"]
    assert command[:2] == ["python3", "-c"]
    return subprocess.run([sys.executable, "-c", command[2], url], capture_output=True, text=True, timeout=60)


def test_helm_test_passes_against_the_secure_endpoint_and_fails_against_an_open_one(run_operator: Any) -> None:
    secure_port = run_operator({})
    passed = helm_test(render({}), f"https://127.0.0.1:{secure_port}/metrics")
    assert passed.returncode == 0, passed.stderr
    assert "a scrape without a token is refused (401)" in passed.stdout
    # The secure check must fail where metrics are served to anyone: the plain endpoint behind an https URL
    # fails the handshake, and behind http the plain check passes.
    plain_port = run_operator(SCENARIOS["plain-metrics"])
    refused = helm_test(render({}), f"https://127.0.0.1:{plain_port}/metrics")
    assert refused.returncode != 0
    plain = helm_test(render(SCENARIOS["plain-metrics"]), f"http://127.0.0.1:{plain_port}/metrics")
    assert plain.returncode == 0, plain.stderr
    assert "metric families" in plain.stdout


def test_the_cert_secret_certificate_is_the_one_served(run_operator: Any, tmp_path: Path) -> None:
    cert_dir = tmp_path / "metrics-certs"
    cert_dir.mkdir()
    pem = serving_certificate(cert_dir)
    port = run_operator(SCENARIOS["metrics-cert-secret"], cert_dir)
    context = ssl.create_default_context(cadata=pem.decode())  # verified: the Secret's certificate or nothing
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
          context.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
        assert tls.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(pem.decode())
