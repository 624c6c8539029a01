"""A small HTTP server in a daemon thread: the operator's metrics endpoint and the workloads' status port are two.

Subclasses give the request handler (a :class:`QuietHandler`) and, for TLS, the server class; start, the bound port
and stop are shared.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class DaemonHTTPServer(ThreadingHTTPServer):
    daemon_threads = True


class BackgroundHTTPServer:
    """``start()`` serves in a daemon thread; ``port`` is the bound port (0 asks for any free one); ``stop()`` joins."""

    thread_name = "interp-http-server"
    poll_interval_s = 0.1
    """How often the serving loop looks for stop(): short keeps stop() quick, the idle cost is negligible."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self._requested_port = host, port
        self._server: DaemonHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the {self.thread_name} is not started")
        return int(self._server.server_address[1])

    def start(self) -> Self:
        server_class = self.server_class()
        if ":" in self.host:
            server_class = type(f"{server_class.__name__}6", (server_class,), {"address_family": socket.AF_INET6})
        self._server = server_class((self.host, self._requested_port), self.handler_class())
        self.configure(self._server)
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True,
                                        kwargs={"poll_interval": self.poll_interval_s})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def server_class(self) -> type[DaemonHTTPServer]:
        return DaemonHTTPServer

    def configure(self, server: DaemonHTTPServer) -> None:
        """Called with the bound server before it serves (e.g. to hand it a certificate)."""

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


class QuietHandler(BaseHTTPRequestHandler):
    """GET only (405 otherwise), bodies with their length, no access log: scrapes and polls every few seconds are
    no news."""

    def refuse(self, status: int, message: str, **headers: str) -> None:
        self.send(status, f"{message}\n".encode(), **headers)

    def _not_allowed(self) -> None:
        self.refuse(405, f"method {self.command} not allowed; use GET", Allow="GET")

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _not_allowed

    def send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced (see the class)."""
