from __future__ import annotations

import json
import logging

import pytest
import structlog

from interp_operator import logs


@pytest.fixture(autouse=True)
def _reset():
    yield
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
