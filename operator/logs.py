"""One structlog configuration for the operator and the workloads.

JSON lines when stderr is not a terminal (a pod's log), a readable console renderer on a terminal.
Context such as job, namespace and rank is bound once with :func:`bind` and appears in every line,
including lines emitted through the standard ``logging`` module (kopf, kubernetes, torch) and Python warnings.

With JSON, a pod's log holds nothing else: the progress bars libraries draw (model loading, downloads) are turned
off, progress comes as ``progress`` lines (:class:`interp_workloads.progress.ProgressReporter`), and an uncaught
exception is one ``error`` line with its traceback rather than a bare traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from types import TracebackType
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


_renders_json: bool | None = None


def renders_json() -> bool | None:
    """Whether :func:`configure` chose JSON lines (None before it ran): a progress bar would break such a log."""
    return _renders_json


QUIET_LIBRARIES = ("celpy", "lark", "urllib3", "asyncio", "filelock", "httpx", "httpcore")
"""Third-party loggers kept at info or above even when INTERP_LOG_LEVEL=debug."""


def configure(level: str | None = None, fmt: str | None = None, **context: Any) -> None:
    """Configure structlog and stdlib logging once per process; ``context`` is bound into every line."""
    global _renders_json
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
    _renders_json = _want_json(fmt)
    if _renders_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
        _turn_off_library_progress_bars()
        sys.excepthook, threading.excepthook = _log_uncaught, _log_uncaught_in_thread
    else:
        renderer = structlog.dev.ConsoleRenderer()
        sys.excepthook, threading.excepthook = sys.__excepthook__, threading.__excepthook__
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
    logging.captureWarnings(True)  # warnings.warn() becomes a log line (logger py.warnings) instead of raw stderr
    for name in QUIET_LIBRARIES:  # their debug lines (a CEL parse trace per rule) would drown every decision
        logging.getLogger(name).setLevel(max(_LEVELS[level_name], logging.INFO))
    structlog.contextvars.clear_contextvars()
    bind(**context)


def _turn_off_library_progress_bars() -> None:
    """Every tqdm bar (Hugging Face libraries' included), whether tqdm is loaded yet or not; an explicit setting of
    either variable is kept."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub and transformers load
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm loads: the default of every bar's disable
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] != "1" or os.environ["TQDM_DISABLE"] != "1":
        return
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is not None and not getattr(tqdm_std.tqdm, "_interp_disabled", False):
        # Loaded already: the same default tqdm's own TQDM_DISABLE gives (a caller's explicit disable= still wins).
        tqdm_std.tqdm.__init__ = functools.partialmethod(tqdm_std.tqdm.__init__, disable=True)
        tqdm_std.tqdm._interp_disabled = True
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        hub.disable_progress_bars()
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:
        transformers_logging.disable_progress_bar()


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    get_logger("interp").error("uncaught exception", error=f"{kind.__name__}: {error}",
                               exc_info=(kind, error, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else None
    get_logger("interp").error("uncaught exception in thread", thread=thread,
                               error=f"{args.exc_type.__name__}: {args.exc_value}",
                               exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def bind(**context: Any) -> None:
    """Bind key/values (job, namespace, rank, ...) into every following log line of this context."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in context.items() if v is not None})


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
