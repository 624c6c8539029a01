"""The operator's /metrics endpoint: plain, and secure (HTTPS; bearer tokens checked with TokenReview and
SubjectAccessReview by the real Kubernetes client against an API server stand-in that answers both reviews the way
the API server does, from a table of tokens and an RBAC-like rule)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from interp_operator import metrics  # noqa: F401  (the operator's metrics, registered as the operator does)
from interp_operator.local import tls
from interp_operator.metrics_server import (
    ALLOW_TTL_S,
    DENY_TTL_S,
    TOKEN_TTL_S,
    KubeReviewer,
    MetricsAuthorizer,
    MetricsServer,
    ServingCertificate,
    serve,
)

OPERATOR_TOKEN = "operator-sa-token"
PROMETHEUS = {"username": "system:serviceaccount:monitoring:prometheus", "uid": "u-1",
              "groups": ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"]}
APP = {"username": "system:serviceaccount:default:app", "uid": "u-2", "groups": ["system:authenticated"]}
TOKENS = {"prometheus-token": PROMETHEUS, "app-token": APP}
METRICS_READERS = {"system:serviceaccounts:monitoring"}
"""Groups bound to the metrics-reader ClusterRole (nonResourceURLs ["/metrics"], verbs ["get"])."""


class StubAPIServer:
    """TokenReview and SubjectAccessReview as the API server answers them; every review is recorded."""

    def __init__(self) -> None:
        self.reviews: list[tuple[str, dict]] = []
        self.down = False
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if stub.down:
                    return self._send(503, {"kind": "Status", "status": "Failure", "code": 503})
                if self.headers.get("Authorization") != f"Bearer {OPERATOR_TOKEN}":
                    return self._send(401, {"kind": "Status", "status": "Failure", "code": 401})
                stub.reviews.append((self.path, body))
                if self.path == "/apis/authentication.k8s.io/v1/tokenreviews":
                    user = TOKENS.get(body["spec"]["token"])
                    status = {"authenticated": True, "user": user} if user else {"authenticated": False,
                                                                                "error": "invalid bearer token"}
                elif self.path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
                    spec = body["spec"]
                    wanted = spec.get("nonResourceAttributes") or {}
                    allowed = (bool(METRICS_READERS & set(spec.get("groups") or ())) and
                               wanted == {"path": "/metrics", "verb": "get"})
                    status = {"allowed": allowed, **({} if allowed else {"reason": "no RBAC policy matched"})}
                else:
                    return self._send(404, {"kind": "Status", "status": "Failure", "code": 404})
                self._send(201, {**body, "status": status})

            def _send(self, code: int, data: dict) -> None:
                payload = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args) -> None: ...

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[str]:
        return [path.rsplit("/", 1)[1] for path, _ in self.reviews]


@pytest.fixture
def api():
    stub = StubAPIServer()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


@pytest.fixture
def kubeconfig(api, tmp_path, monkeypatch):
    """The operator's own credentials: a kubeconfig naming the stand-in, as outside a cluster."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "stub",
        "clusters": [{"name": "stub", "cluster": {"server": api.url}}],
        "users": [{"name": "operator", "user": {"token": OPERATOR_TOKEN}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "operator"}}],
    }))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    previous = client.Configuration.get_default_copy()
    yield path
    client.Configuration.set_default(previous)


def api_client(api: StubAPIServer) -> client.ApiClient:
    configuration = client.Configuration(host=api.url, api_key={"authorization": f"Bearer {OPERATOR_TOKEN}"})
    return client.ApiClient(configuration)


def https_get(port: int, trust: ssl.SSLContext, token: str | None = None, path: str = "/metrics",
              scheme: str = "Bearer") -> tuple[int, str]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=trust, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"{scheme} {token}"} if token else {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def trusting(pem: bytes) -> ssl.SSLContext:
    """A client context that trusts only ``pem`` and checks the server's name (127.0.0.1) against it."""
    return ssl.create_default_context(cadata=pem.decode())


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_secure_scrapes_need_a_token_that_passes_both_reviews(kubeconfig, api):
    server = serve(0, secure=True, cert_dir=None, host="127.0.0.1")
    try:
        # The self-signed certificate made at start is its own CA, and names 127.0.0.1.
        trust = trusting(ssl.get_server_certificate(("127.0.0.1", server.port)).encode())
        status, body = https_get(server.port, trust)
        assert status == 401 and "bearer token is required" in body
        assert https_get(server.port, trust, "prometheus-token", scheme="Basic")[0] == 401
        assert api.reviews == []  # nothing to review without a bearer token

        status, body = https_get(server.port, trust, "stolen-token")
        assert status == 401 and "TokenReview" in body
        status, body = https_get(server.port, trust, "app-token")
        assert status == 403 and 'user "system:serviceaccount:default:app" cannot get path "/metrics"' in body
        assert api.kinds() == ["tokenreviews", "tokenreviews", "subjectaccessreviews"]

        status, body = https_get(server.port, trust, "prometheus-token")
        assert status == 200
        assert {"interp_operator_build_info", "interp_operator_object_phase"} <= families(body)
        review = api.reviews[-1][1]["spec"]
        assert review["user"] == PROMETHEUS["username"] and review["groups"] == PROMETHEUS["groups"]
        assert review["uid"] == PROMETHEUS["uid"]
        assert review["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"}
        assert https_get(server.port, trust, "prometheus-token", path="/debug")[0] == 403  # only /metrics is granted
    finally:
        server.stop()


def test_plain_http_to_the_secure_port_gets_nothing(kubeconfig):
    server = serve(0, secure=True, cert_dir=None, host="127.0.0.1")
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            connection.request("GET", "/metrics", headers={"Authorization": "Bearer prometheus-token"})
            connection.getresponse()
        connection.close()
    finally:
        server.stop()


def test_insecure_serving_is_plain_http_without_reviews(api):
    server = serve(0, secure=False, cert_dir=None, host="127.0.0.1")
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and "interp_operator_gangs" in families(response.read().decode())
        connection.close()
    finally:
        server.stop()
    assert api.reviews == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reviews_are_cached_for_the_api_servers_delegating_ttls(api):
    clock = Clock()
    authorizer = MetricsAuthorizer(KubeReviewer(api_client(api)), clock=clock)
    allowed, denied = "Bearer prometheus-token", "Bearer app-token"
    for _ in range(3):
        assert authorizer.check(allowed, "/metrics").status == 200
        assert authorizer.check(denied, "/metrics").status == 403
    assert len(api.reviews) == 4  # one TokenReview and one SubjectAccessReview per token
    clock.now += DENY_TTL_S + 1  # a denial is asked again after 30 s; tokens and allowances are still known
    assert authorizer.check(denied, "/metrics").status == 403
    assert authorizer.check(allowed, "/metrics").status == 200
    assert api.kinds()[4:] == ["subjectaccessreviews"]
    clock.now += TOKEN_TTL_S  # a token is reviewed again after a minute
    assert authorizer.check(allowed, "/metrics").status == 200
    assert api.kinds()[5:] == ["tokenreviews"]
    clock.now += ALLOW_TTL_S  # and an allowance after five
    assert authorizer.check(allowed, "/metrics").status == 200
    assert api.kinds()[6:] == ["tokenreviews", "subjectaccessreviews"]


def test_an_unavailable_api_server_is_a_500_and_is_asked_again(api):
    authorizer = MetricsAuthorizer(KubeReviewer(api_client(api)), clock=Clock())
    api.down = True
    verdict = authorizer.check("Bearer prometheus-token", "/metrics")
    assert verdict.status == 500 and "TokenReview failed: HTTP 503" in verdict.message
    api.down = False
    assert authorizer.check("Bearer prometheus-token", "/metrics").status == 200


def test_the_operators_own_credentials_refused_is_a_500(api):
    wrong = client.ApiClient(client.Configuration(host=api.url, api_key={"authorization": "Bearer expired"}))
    verdict = MetricsAuthorizer(KubeReviewer(wrong)).check("Bearer prometheus-token", "/metrics")
    assert verdict.status == 500 and "HTTP 401" in verdict.message


def write_certs(directory: Path, certs: tls.ServingCerts) -> None:
    (directory / "tls.crt.new").write_bytes(certs.cert_pem)
    (directory / "tls.key.new").write_bytes(certs.key_pem)
    os.replace(directory / "tls.key.new", directory / "tls.key")
    os.replace(directory / "tls.crt.new", directory / "tls.crt")


def test_certificates_from_a_directory_are_served_and_reloaded_when_renewed(api, tmp_path):
    first, renewed = tls.generate("127.0.0.1"), tls.generate("127.0.0.1")
    write_certs(tmp_path, first)
    certificate = ServingCertificate(tmp_path)
    server = MetricsServer(0, "127.0.0.1", certificate=certificate,
                           authorizer=MetricsAuthorizer(KubeReviewer(api_client(api)))).start()
    try:
        assert https_get(server.port, trusting(first.ca_pem), "prometheus-token")[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(server.port, trusting(renewed.ca_pem), "prometheus-token")
        write_certs(tmp_path, renewed)
        later = time.time() + 5  # a renewal within the filesystem's timestamp resolution is still seen
        os.utime(tmp_path / "tls.crt", (later, later))
        assert https_get(server.port, trusting(renewed.ca_pem), "prometheus-token")[0] == 200
    finally:
        server.stop()


def test_a_certificate_directory_without_the_pair_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"has no tls\.crt"):
        ServingCertificate(tmp_path)
    (tmp_path / "tls.crt").write_text("not a certificate")
    (tmp_path / "tls.key").write_text("not a key")
    with pytest.raises(ValueError, match="cannot load the metrics certificate"):
        ServingCertificate(tmp_path)


def test_tokens_are_never_sent_in_clear(api):
    with pytest.raises(ValueError, match="needs TLS"):
        MetricsServer(0, authorizer=MetricsAuthorizer(KubeReviewer(api_client(api))))
