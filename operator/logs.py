"""One structlog configuration for the operator and the workloads.

JSON lines when stderr is not a terminal (a pod's log), a readable console renderer on a terminal.
Context such as job, namespace and rank is bound once with :func:`bind` and appears in every line,
including lines emitted through the standard ``logging`` module (kopf, kubernetes, torch).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _want_json(fmt: str | None) -> bool:
    fmt = (fmt or os.environ.get("INTERP_LOG_FORMAT", "auto")).lower()
    if fmt == "auto":
        return not sys.stderr.isatty()
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be one of auto, json, console; got {fmt!r}")
    return fmt == "json"


QUIET_LIBRARIES = ("celpy", "lark", "urllib3", "asyncio", "filelock", "httpx", "httpcore")
"""Third-party loggers kept at info or above even when INTERP_LOG_LEVEL=debug."""


def configure(level: str | None = None, fmt: str | None = None, **context: Any) -> None:
    """Configure structlog and stdlib logging once per process; ``context`` is bound into every line."""
    level_name = (level or os.environ.get("INTERP_LOG_LEVEL", "info")).lower()
    if level_name not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}; got {level_name!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if _want_json(fmt):
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level_name])
    for name in QUIET_LIBRARIES:  # their debug lines (a CEL parse trace per rule) would drown every decision
        logging.getLogger(name).setLevel(max(_LEVELS[level_name], logging.INFO))
    structlog.contextvars.clear_contextvars()
    bind(**context)


def bind(**context: Any) -> None:
    """Bind key/values (job, namespace, rank, ...) into every following log line of this context."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in context.items() if v is not None})


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
