"""How the SDK reaches an API server: one small transport interface, and its implementation over the ``kubernetes``
client (which knows kubeconfig files, in-cluster service accounts, exec credential plugins and TLS).

Everything above this module speaks plain JSON through :class:`Transport`, so unit tests replay recorded API
responses through the same code paths that talk to a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REQUEST_TIMEOUT_S = 30.0
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Params = Mapping[str, str | int | bool]


class ApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP status, ``reason`` the Status object's reason."""

    def __init__(self, status: int, reason: str, message: str, body: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status} {reason})" if message else f"HTTP {status} {reason}")
        self.status, self.reason, self.message, self.body = status, reason, message, body

    @classmethod
    def from_response(cls, status: int, payload: bytes) -> ApiError:
        try:
            body = json.loads(payload)
        except ValueError:
            return cls(status, "", payload.decode(errors="replace")[:500])
        if not isinstance(body, dict):
            return cls(status, "", str(body)[:500], body)
        return cls(status, str(body.get("reason") or ""), str(body.get("message") or ""), body)


class NotFound(ApiError):
    """HTTP 404: the object (or its kind: are the CRDs installed?) does not exist."""


def raise_for_status(status: int, payload: bytes) -> None:
    if 200 <= status < 300:
        return
    error = ApiError.from_response(status, payload)
    if status == 404:
        raise NotFound(error.status, error.reason, error.message, error.body)
    raise error


class Transport(Protocol):
    """JSON over HTTP to one API server."""

    namespace: str
    """The namespace of the configuration (kubeconfig context, service account), used when a call names none."""

    def request(self, method: str, path: str, *, params: Params | None = None, body: Any = None,
                content_type: str = JSON, timeout: float | None = REQUEST_TIMEOUT_S) -> Any:
        """The decoded JSON answer; raises :class:`ApiError` (or :class:`NotFound`) for a non-2xx status."""
        ...

    def stream(self, path: str, *, params: Params | None = None,
               timeout: float | None = None) -> AbstractContextManager[Iterator[bytes]]:
        """A GET whose answer is read line by line as it arrives (watches, followed logs)."""
        ...

    @property
    def api_client(self) -> Any:
        """The underlying ``kubernetes.client.ApiClient`` (exec and port-forward use its websocket support)."""
        ...


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


class KubeTransport:
    """:class:`Transport` over a ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: Any, namespace: str = "default") -> None:
        self._api_client = api_client
        self.namespace = namespace

    @property
    def api_client(self) -> Any:
        return self._api_client

    def _call(self, method: str, path: str, params: Params | None, body: Any, content_type: str,
              timeout: float | None) -> Any:
        query = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (params or {}).items()]
        method, url, headers, payload, post = self._api_client.param_serialize(
            method, path, query_params=query, header_params={"Content-Type": content_type, "Accept": JSON},
            body=body, auth_settings=["BearerToken"],
        )
        return self._api_client.call_api(method, url, header_params=headers, body=payload, post_params=post,
                                         _request_timeout=timeout)

    def request(self, method: str, path: str, *, params: Params | None = None, body: Any = None,
                content_type: str = JSON, timeout: float | None = REQUEST_TIMEOUT_S) -> Any:
        response = self._call(method, path, params, body, content_type, timeout)
        payload = response.read()
        raise_for_status(response.status, payload)
        return json.loads(payload) if payload else None

    @contextmanager
    def stream(self, path: str, *, params: Params | None = None,
               timeout: float | None = None) -> Iterator[Iterator[bytes]]:
        response = self._call("GET", path, params, None, JSON, timeout)
        raw = response.response
        try:
            if not 200 <= response.status < 300:
                raise_for_status(response.status, raw.read())
            yield _lines(raw.stream(16 * 1024, decode_content=True))
        finally:
            raw.release_conn()


@dataclass(frozen=True)
class Connection:
    """Where a client connects: a kubeconfig (and context), or the pod's service account."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    """None: a kubeconfig when one exists ($KUBECONFIG or ~/.kube/config), else the pod's service account."""


def connect(connection: Connection = Connection()) -> KubeTransport:
    """A transport for the cluster ``connection`` names, with that configuration's namespace."""
    from kubernetes import client, config

    configuration = client.Configuration()
    kubeconfig = connection.kubeconfig or os.environ.get("KUBECONFIG") or None
    default_file = Path.home() / ".kube" / "config"
    in_cluster = connection.in_cluster
    if in_cluster is None:
        in_cluster = kubeconfig is None and not default_file.exists() and "KUBERNETES_SERVICE_HOST" in os.environ
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.exists() else "default"
        return KubeTransport(client.ApiClient(configuration), namespace)
    # Read the path now: the client library fixes its default kubeconfig path when it is first imported.
    path = kubeconfig.split(os.pathsep)[0] if kubeconfig else str(default_file)
    if not Path(path).exists():
        raise FileNotFoundError(f"no kubeconfig at {path}: pass kubeconfig=..., set KUBECONFIG, or run in a pod")
    config.load_kube_config(config_file=path, context=connection.context, client_configuration=configuration)
    contexts, active = config.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c["name"] == connection.context), active) if connection.context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return KubeTransport(client.ApiClient(configuration), namespace)
