"""Port-forwarding to a pod: a local TCP listener whose connections reach ``POD:PORT``.

Each connection goes straight to the pod's IP when this machine can reach it (inside the cluster, or interp-local,
whose pods listen on local loopback addresses), and otherwise through the API server's ``portforward`` subresource
(a websocket, as ``kubectl port-forward`` uses).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..logs import get_logger

CONNECT_TIMEOUT_S = 1.0
BUFFER = 64 * 1024

log = get_logger("interp_operator.sdk.forward")


def reachable(ip: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def api_socket(api_client: Any, namespace: str, pod: str, port: int) -> socket.socket:
    """A socket to ``pod:port`` through the API server's portforward subresource."""
    from kubernetes import client
    from kubernetes.stream import portforward

    forward = portforward(client.CoreV1Api(api_client).connect_get_namespaced_pod_portforward, pod, namespace,
                          ports=str(port))
    return forward.socket(port)  # type: ignore[no-any-return]


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [a, b]
    try:
        while True:
            readable, _, _ = select.select(sockets, [], [], 60)
            for source in readable:
                data = source.recv(BUFFER)
                if not data:
                    return
                (b if source is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()


class PortForward:
    """Listens on ``127.0.0.1:local_port`` (0: a free port) and forwards to a pod; a context manager."""

    def __init__(self, upstream: Callable[[], socket.socket], local_port: int = 0, host: str = "127.0.0.1") -> None:
        self._upstream = upstream
        self._listener = socket.create_server((host, local_port))
        self.host, self.local_port = host, self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="interp-port-forward", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.local_port}"

    def start(self) -> PortForward:
        self._thread.start()
        return self

    def _serve(self) -> None:
        self._listener.settimeout(0.5)
        while not self._stopped.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = self._upstream()
            except Exception as err:  # one failed connection must not end the forward
                log.warning("port-forward: cannot reach the pod", error=f"{type(err).__name__}: {err}")
                downstream.close()
                continue
            threading.Thread(target=_pump, args=(downstream, upstream), daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until interrupted (the CLI)."""
        self.start()
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()


def to_pod(api_client: Any, namespace: str, pod: dict[str, Any], port: int, local_port: int = 0) -> PortForward:
    """A forward to ``port`` of ``pod`` (a pod object): direct when its IP answers, else through the API server."""
    name = pod["metadata"]["name"]
    ip = (pod.get("status") or {}).get("podIP")
    if ip and reachable(ip, port):
        return PortForward(lambda: socket.create_connection((ip, port), timeout=10), local_port)
    return PortForward(lambda: api_socket(api_client, namespace, name, port), local_port)
