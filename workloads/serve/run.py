"""Load what a replica serves and run the HTTP server; the port answers (live, not ready) while loading."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi.responses import JSONResponse

from interp_operator import logs

from ..instrument import UnsupportedModelError
from ..models import load_model
from ..spec import ModelSpec
from .app import BodyLimit, Tokens, create_app
from .config import ServeConfig
from .server import Server, load_saes, load_vector_file

log = logs.get_logger(__name__)
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class QuietProbes(logging.Filter):
    """Kubelet probes and Prometheus scrapes every few seconds would drown the access log: their successful calls
    are not logged (failures are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: (client, method, path with query, HTTP version, status)
        args = record.args
        return not (isinstance(args, tuple) and len(args) == 5 and args[2] in PROBE_PATHS and args[4] == 200)


class LoadError(Exception):
    """The model, an SAE or a steering vector cannot be served as configured (restarting will not help)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_server(config: ServeConfig, device: str = "auto") -> Server:
    try:
        lm = load_model(ModelSpec(model=config.model, dtype=config.dtype, device=device,  # type: ignore[arg-type]
                                  revision=config.revision, trust_remote_code=config.trust_remote_code))
    except (OSError, ValueError, UnsupportedModelError) as err:
        raise LoadError("ModelLoadFailed", f"model {config.model}: {err}") from err
    try:
        saes, hooks = load_saes(config.saes, lm.model.device)
    except (OSError, ValueError, KeyError) as err:
        raise LoadError("SAELoadFailed", f"SAE: {err}") from err
    server = Server(lm=lm, saes=saes, sae_hooks=hooks, limits=config.limits, model_name=config.name)
    try:
        server.start()
    except ValueError as err:
        raise LoadError("SAELoadFailed", str(err)) from err
    try:
        for name, (hook, path) in config.vectors.items():
            if hook is None:
                raise ValueError(f"steering vector {name!r} has no hookPoint")
            server.register_vector(load_vector_file(path), hook, name, "spec")
    except (OSError, ValueError) as err:
        server.stop()
        raise LoadError("VectorLoadFailed", f"steering vector: {err}") from err
    return server


class Loading:
    """The ASGI app while the model loads: live on /healthz, 503 everywhere else; then the real app."""

    def __init__(self) -> None:
        self.app: Callable[..., Any] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/healthz":
            response = JSONResponse({"status": "ok", "loading": True})
        else:
            response = JSONResponse({"detail": "the model is loading", "field": ""}, 503, headers={"Retry-After": "5"})
        await response(scope, receive, send)


def serve(config: ServeConfig, device: str, host: str, port: int) -> LoadError | None:
    """Serve until stopped; return the load failure if loading failed (the process then exits with code 3)."""
    front = Loading()
    logging.getLogger("uvicorn.access").addFilter(QuietProbes())
    http = uvicorn.Server(uvicorn.Config(front, host=host, port=port, log_config=None, lifespan="on"))
    failure: list[LoadError] = []
    loaded: list[Server] = []

    def load() -> None:
        try:
            server = load_server(config, device)
        except LoadError as err:
            failure.append(err)
            http.should_exit = True
            return
        loaded.append(server)
        front.app = BodyLimit(create_app(server, Tokens(config.tokens_file)), config.limits.max_request_bytes)
        log.info("ready", model=config.model, saes=sorted(config.saes), vectors=sorted(config.vectors))

    threading.Thread(target=load, name="load", daemon=True).start()
    http.run()
    for server in loaded:
        server.stop()
    return failure[0] if failure else None
