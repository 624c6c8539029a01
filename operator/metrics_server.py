"""The operator's ``/metrics`` endpoint: plain HTTP, or HTTPS with every scrape authenticated and authorized.

Secure serving follows controller-runtime's ``WithAuthenticationAndAuthorization`` filter: the bearer token of a
scrape is checked with a TokenReview, and the user it names must be allowed ``get`` on the non-resource URL it asked
for (``/metrics``) by a SubjectAccessReview; 401 without a valid token, 403 without the permission. Answers are cached
as the API server's delegating authenticator and authorizer cache them (tokens 1 min, allowed 5 min, denied 30 s), so
that a Prometheus scraping every 15 s costs the API server a review every few minutes.

The serving certificate is ``tls.crt``/``tls.key`` of a directory (a mounted cert-manager Secret; reloaded when the
files change), or, without one, a self-signed certificate made at start.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from . import logs
from .httpthread import BackgroundHTTPServer, DaemonHTTPServer, QuietHandler
from .kube import api_client

CERT_FILE, KEY_FILE = "tls.crt", "tls.key"
TOKEN_TTL_S, ALLOW_TTL_S, DENY_TTL_S = 60.0, 300.0, 30.0
REVIEW_TIMEOUT_S = 10.0
HANDSHAKE_TIMEOUT_S = 10.0
CACHE_ENTRIES = 4096
_log = logs.get_logger("interp_operator.metrics")


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Access:
    allowed: bool
    reason: str = ""


class Reviewer(Protocol):
    """The two reviews, asked of the API server."""

    def authenticate(self, token: str) -> User | None: ...
    def authorize(self, user: User, path: str, verb: str) -> Access: ...


class ReviewError(Exception):
    """The API server could not answer a review (unreachable, refused the operator's own credentials, ...)."""


class KubeReviewer:
    """TokenReview and SubjectAccessReview through the Kubernetes client (the operator's service account)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._models = client
        self._authentication = client.AuthenticationV1Api(api_client)
        self._authorization = client.AuthorizationV1Api(api_client)

    def authenticate(self, token: str) -> User | None:
        try:
            review = self._authentication.create_token_review(
                self._models.V1TokenReview(spec=self._models.V1TokenReviewSpec(token=token)),
                _request_timeout=REVIEW_TIMEOUT_S)
        except Exception as err:
            raise ReviewError(f"TokenReview failed: {_describe(err)}") from err
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        extra = tuple(sorted((key, tuple(values)) for key, values in (user.extra or {}).items()))
        return User(user.username or "", user.uid or "", tuple(user.groups or ()), extra)

    def authorize(self, user: User, path: str, verb: str) -> Access:
        models = self._models
        spec = models.V1SubjectAccessReviewSpec(
            user=user.name, uid=user.uid or None, groups=list(user.groups) or None,
            extra={key: list(values) for key, values in user.extra} or None,
            non_resource_attributes=models.V1NonResourceAttributes(path=path, verb=verb))
        try:
            review = self._authorization.create_subject_access_review(models.V1SubjectAccessReview(spec=spec),
                                                                      _request_timeout=REVIEW_TIMEOUT_S)
        except Exception as err:
            raise ReviewError(f"SubjectAccessReview failed: {_describe(err)}") from err
        status = review.status
        return Access(bool(status and status.allowed and not status.denied), (status.reason or "") if status else "")


def _describe(err: Exception) -> str:
    status, reason = getattr(err, "status", None), getattr(err, "reason", None)
    return f"HTTP {status} {reason}" if status else f"{type(err).__name__}: {err}"


@dataclass
class _Cache:
    clock: Callable[[], float]
    entries: dict[Any, tuple[float, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: Any) -> tuple[bool, Any]:
        with self.lock:
            hit = self.entries.get(key)
            if hit is None or hit[0] <= self.clock():
                return False, None
            return True, hit[1]

    def put(self, key: Any, value: Any, ttl_s: float) -> None:
        now = self.clock()
        with self.lock:
            if len(self.entries) >= CACHE_ENTRIES:  # many distinct tokens: keep what is still valid, else start over
                self.entries = {k: v for k, v in self.entries.items() if v[0] > now}
                if len(self.entries) >= CACHE_ENTRIES:
                    self.entries.clear()
            self.entries[key] = (now + ttl_s, value)


@dataclass(frozen=True)
class Verdict:
    status: int
    message: str


class MetricsAuthorizer:
    """Authenticates a request's bearer token and authorizes its path and verb, with cached reviews."""

    def __init__(self, reviewer: Reviewer, clock: Callable[[], float] = time.monotonic) -> None:
        self._reviewer = reviewer
        self._tokens = _Cache(clock)
        self._access = _Cache(clock)

    def check(self, authorization: str | None, path: str, verb: str = "get") -> Verdict:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Verdict(401, "Unauthorized: a bearer token is required (Authorization: Bearer <token>)")
        key = hashlib.sha256(token.encode()).hexdigest()  # the token itself is never kept
        try:
            known, user = self._tokens.get(key)
            if not known:
                user = self._reviewer.authenticate(token)
                self._tokens.put(key, user, TOKEN_TTL_S)
            if user is None:
                return Verdict(401, "Unauthorized: the token was not accepted by the API server's TokenReview")
            known, access = self._access.get((user, path, verb))
            if not known:
                access = self._reviewer.authorize(user, path, verb)
                self._access.put((user, path, verb), access, ALLOW_TTL_S if access.allowed else DENY_TTL_S)
        except ReviewError as err:
            _log.warning("metrics scrape not reviewed", error=str(err))
            return Verdict(500, f"Internal Server Error: {err}")
        if not access.allowed:
            because = f" ({access.reason})" if access.reason else ""
            return Verdict(403, f'Forbidden: user "{user.name}" cannot {verb} path "{path}"{because}')
        return Verdict(200, "")


# -- TLS ---------------------------------------------------------------------------------------------------------
class ServingCertificate:
    """The server's TLS context; with a directory, its ``tls.crt``/``tls.key`` are reloaded whenever they change."""

    def __init__(self, cert_dir: Path | None) -> None:
        if cert_dir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="interp-metrics-tls-")
            cert_dir = Path(self._scratch.name)
            cert, key = self_signed()
            (cert_dir / CERT_FILE).write_bytes(cert)
            (cert_dir / KEY_FILE).touch(mode=0o600)
            (cert_dir / KEY_FILE).write_bytes(key)
        self.cert, self.key = cert_dir / CERT_FILE, cert_dir / KEY_FILE
        for path in (self.cert, self.key):
            if not path.is_file():
                raise ValueError(f"--metrics-cert-dir {cert_dir} has no {path.name} (a kubernetes.io/tls Secret "
                                 f"mounted there has {CERT_FILE} and {KEY_FILE})")
        self._lock = threading.Lock()
        self._loaded: tuple[float, float] | None = None
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.refresh()

    def refresh(self) -> None:
        """Load the files again if they changed since the last load (a renewed certificate, without a restart)."""
        with self._lock:
            stamp = (self.cert.stat().st_mtime, self.key.stat().st_mtime)
            if stamp == self._loaded:
                return
            try:
                self.context.load_cert_chain(self.cert, self.key)
            except (ssl.SSLError, OSError) as err:
                if self._loaded is None:
                    raise ValueError(f"cannot load the metrics certificate {self.cert}: {err}") from err
                # A half-written renewal: keep serving the certificate we have, try again on the next connection.
                _log.warning("metrics certificate not reloaded", error=str(err))
                return
            if self._loaded is not None:
                _log.info("metrics certificate reloaded", cert=str(self.cert))
            self._loaded = stamp


def self_signed(days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed serving certificate for this host (names: the hostname, localhost, 127.0.0.1, the pod IP)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if os.environ.get("POD_IP"):
        names.append(x509.IPAddress(ipaddress.ip_address(os.environ["POD_IP"])))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"interp-operator-metrics@{hostname}")])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# -- the server --------------------------------------------------------------------------------------------------
class _TLSServer(DaemonHTTPServer):
    certificate: ServingCertificate | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake happens here, in the request's own thread: a slow client holds up no other scrape."""
        if self.certificate is None:
            super().finish_request(request, client_address)
            return
        self.certificate.refresh()
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            secured = self.certificate.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a plain-HTTP or failed handshake: nothing can be answered on this connection
        try:
            super().finish_request(secured, client_address)
        finally:
            secured.close()


class MetricsServer(BackgroundHTTPServer):
    """``GET /metrics`` of ``registry`` in a daemon thread; with ``authorizer``, only for reviewed scrapers."""

    thread_name = "interp-metrics-server"

    def __init__(self, port: int, host: str = "0.0.0.0", *, certificate: ServingCertificate | None = None,
                 authorizer: MetricsAuthorizer | None = None, registry: CollectorRegistry = REGISTRY) -> None:
        if authorizer is not None and certificate is None:
            raise ValueError("an authorized metrics endpoint needs TLS: bearer tokens must not travel in clear")
        super().__init__(host, port)
        self._certificate, self._authorizer, self._registry = certificate, authorizer, registry

    def server_class(self) -> type[DaemonHTTPServer]:
        return _TLSServer

    def configure(self, server: DaemonHTTPServer) -> None:
        assert isinstance(server, _TLSServer)
        server.certificate = self._certificate

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        authorizer, registry = self._authorizer, self._registry

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if authorizer is not None:
                    verdict = authorizer.check(self.headers.get("Authorization"), path, "get")
                    if verdict.status != 200:
                        extra = {"WWW-Authenticate": 'Bearer realm="interp-operator"'} if verdict.status == 401 else {}
                        self.refuse(verdict.status, verdict.message, **extra)
                        return
                if path != "/metrics":
                    self.refuse(404, f"no such endpoint {path}; metrics are at /metrics")
                    return
                self.send(200, generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8")

        return Handler


def serve(port: int, *, secure: bool, cert_dir: Path | None, host: str = "0.0.0.0") -> MetricsServer:
    """Start the operator's metrics endpoint on ``port``, as the command line asks."""
    if not secure:
        return MetricsServer(port, host).start()
    authorizer = MetricsAuthorizer(KubeReviewer(api_client()))
    return MetricsServer(port, host, certificate=ServingCertificate(cert_dir), authorizer=authorizer).start()

