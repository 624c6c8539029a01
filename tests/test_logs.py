from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest
import structlog

from interp_operator import logs


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):  # JSON logging sets them for the process
        monkeypatch.setenv(name, os.environ.get(name, "0"))
    hooks = sys.excepthook, threading.excepthook
    monkeypatch.setattr(logs, "_renders_json", logs.renders_json())
    yield
    sys.excepthook, threading.excepthook = hooks
    logging.captureWarnings(False)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers.clear()


def lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.strip().splitlines()]


def test_json_lines_carry_bound_context(capsys):
    logs.configure("info", "json", job="sae-1", namespace="interp")
    logs.bind(rank=3)
    logs.get_logger("test").info("step done", step=10)
    logging.getLogger("kopf.objects").warning("from the stdlib")
    first, second = lines(capsys.readouterr().err)
    assert first["event"] == "step done" and first["step"] == 10
    for line in (first, second):
        assert (line["job"], line["namespace"], line["rank"]) == ("sae-1", "interp", 3)
        assert "timestamp" in line and "level" in line
    assert second["event"] == "from the stdlib" and second["level"] == "warning"


def test_level_filters(capsys):
    logs.configure("warning", "json")
    logs.get_logger().info("hidden")
    logs.get_logger().error("shown")
    assert [line["event"] for line in lines(capsys.readouterr().err)] == ["shown"]


def test_console_format_is_not_json(capsys):
    logs.configure("info", "console", job="x")
    logs.get_logger().info("hello")
    err = capsys.readouterr().err
    assert "hello" in err and "job" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.strip().splitlines()[-1])


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_bad_settings_are_clear_errors(level, fmt):
    with pytest.raises(ValueError, match="must be one of"):
        logs.configure(level, fmt)


def test_debug_keeps_third_party_parse_traces_out(capsys):
    logs.configure("debug", "json")
    logging.getLogger("celpy").debug("parse tree of a CEL rule")
    logging.getLogger("lark").debug("lexer state")
    logging.getLogger("celpy").warning("a CEL warning")
    logs.get_logger("interp_operator.decisions").debug("placement considered")
    assert [line["event"] for line in lines(capsys.readouterr().err)] == ["a CEL warning", "placement considered"]


def run_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with stderr a pipe (as in a pod), no progress-bar settings inherited."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "INTERP_LOG_FORMAT", "INTERP_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_warnings_are_json_lines(capsys):
    logs.configure("info", "json", job="w")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a deprecated knob", DeprecationWarning, stacklevel=1)
    (line,) = lines(capsys.readouterr().err)
    assert line["logger"] == "py.warnings" and "a deprecated knob" in line["event"] and line["job"] == "w"


def test_an_uncaught_exception_is_one_json_line_with_its_traceback():
    result = run_python("""
        import threading
        from interp_operator import logs
        logs.configure("info", "json", job="crash")
        worker = threading.Thread(target=lambda: 1 / 0, name="loader")
        worker.start(); worker.join()
        raise RuntimeError("boom")
    """)
    assert result.returncode == 1
    thread, main = lines(result.stderr)
    assert (thread["event"], thread["thread"], thread["error"]) == (
        "uncaught exception in thread", "loader", "ZeroDivisionError: division by zero")
    assert (main["event"], main["level"], main["error"], main["job"]) == (
        "uncaught exception", "error", "RuntimeError: boom", "crash")
    assert main["exception"].startswith("Traceback (most recent call last):") and 'line 7' in main["exception"]


def test_library_progress_bars_stay_out_of_json_logs():
    # transformers loaded before the configuration, tqdm after it: neither draws a bar among the JSON lines.
    code = """
        from transformers.utils import logging as transformers_logging
        from interp_operator import logs
        logs.configure("info", "json")
        from tqdm import tqdm
        for _ in tqdm(range(3), desc="plain tqdm"):
            pass
        for _ in transformers_logging.tqdm(range(3), desc="Loading weights"):
            pass
        logs.get_logger().info("loaded")
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert [line["event"] for line in lines(result.stderr)] == ["loaded"]
    console = run_python(code.replace('"json"', '"console"'))
    assert "plain tqdm" in console.stderr and "Loading weights" in console.stderr  # a terminal keeps its bars
