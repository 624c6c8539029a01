"""Progress reporting: log cadence and sliding-window rate, the status HTTP server, the termination message."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import pytest

from interp_workloads.progress import (
    ProgressReporter,
    StatusServer,
    status_server_from_env,
    write_termination_message,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CapturingLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def info(self, event: str, **fields) -> None:
        self.lines.append((event, fields))


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def reporter(clock: FakeClock, logger: CapturingLogger, **kwargs) -> ProgressReporter:
    return ProgressReporter(stream=io.StringIO(), logger=logger, clock=clock, **kwargs)


def test_log_lines_at_most_every_interval_and_at_close():
    clock, logger = FakeClock(), CapturingLogger()
    progress = reporter(clock, logger, log_every_s=10.0, unit="doc")
    start = clock.now
    for offset in (1, 5, 9.9, 10, 12, 19.9, 20.5, 31):
        clock.now = start + offset
        progress.update(2, shard=int(offset))
    assert [fields["done"] for _, fields in logger.lines] == [8, 14, 16]  # at +10, +20.5 and +31
    assert [fields["shard"] for _, fields in logger.lines] == [10, 20, 31]
    clock.now += 1
    progress.close()
    progress.close()
    assert len(logger.lines) == 4
    event, last = logger.lines[-1]
    assert event == "progress"
    assert last["done"] == progress.done == 16 and last["total"] is None and last["percent"] is None
    assert last["eta_s"] is None


def test_percent_and_eta_from_the_total():
    clock, logger = FakeClock(), CapturingLogger()
    progress = reporter(clock, logger, log_every_s=4.5)
    progress.set_total(1000)
    for _ in range(5):
        clock.now += 1
        progress.update(100, loss=0.5)
    _, line = logger.lines[-1]
    assert line == {"done": 500, "total": 1000, "percent": 50.0, "rate": 100.0, "eta_s": 5.0, "loss": 0.5}


def test_rate_covers_the_last_thirty_seconds():
    clock, logger = FakeClock(), CapturingLogger()
    progress = reporter(clock, logger, log_every_s=1e9)
    assert progress.rate() == 0.0
    for _ in range(60):
        clock.now += 1
        progress.update(10)
    assert progress.rate() == pytest.approx(10.0)
    for _ in range(40):
        clock.now += 1
        progress.update(100)
    assert progress.rate() == pytest.approx(100.0)  # the slow first minute is out of the window
    clock.now += 15
    assert progress.rate() == pytest.approx(1500 / 30)
    clock.now += 16
    assert progress.rate() == 0.0


def test_rate_with_frequent_updates():
    clock, logger = FakeClock(), CapturingLogger()
    progress = reporter(clock, logger, log_every_s=1e9)
    for _ in range(6000):
        clock.now += 0.01
        progress.update(1)
    assert progress.done == 6000
    assert progress.rate() == pytest.approx(100.0, rel=0.02)
    assert len(progress._samples) <= 2 + 30 / 0.5


def test_terminal_gets_a_bar_not_log_lines():
    stream, logger = TTY(), CapturingLogger()
    progress = ProgressReporter(unit="tok", total=50, stream=stream, logger=logger, log_every_s=0.0)
    progress.update(20, layer=3)
    progress.update(30)
    progress.close()
    assert logger.lines == []
    assert progress.done == 50
    output = stream.getvalue()
    assert "50.0/50.0" in output and "tok" in output and "layer=3" in output


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture
def server():
    state = {"done": 3, "total": 10}
    status = StatusServer(lambda: dict(state), host="127.0.0.1", port=0,
                          metrics=lambda: "interp_tokens_total 3\n").start()
    yield status, state
    status.stop()


def test_status_server_endpoints(server):
    status, state = server
    base = f"http://127.0.0.1:{status.port}"
    assert status.port > 0
    code, kind, body = get(f"{base}/progress")
    assert (code, kind, json.loads(body)) == (200, "application/json", {"done": 3, "total": 10})
    state["done"] = 7
    assert json.loads(get(f"{base}/progress?verbose=1")[2]) == {"done": 7, "total": 10}
    assert get(f"{base}/healthz")[::2] == (200, "ok")
    code, kind, body = get(f"{base}/metrics")
    assert (code, body) == (200, "interp_tokens_total 3\n") and kind.startswith("text/plain; version=0.0.4")
    assert get(f"{base}/nope")[0] == 404


def test_status_server_rejects_other_methods(server):
    status, _ = server
    request = urllib.request.Request(f"http://127.0.0.1:{status.port}/progress", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 405 and caught.value.headers["Allow"] == "GET"


def test_status_server_report_errors_and_missing_metrics():
    def broken() -> dict:
        raise RuntimeError("store unavailable")

    status = StatusServer(broken, host="127.0.0.1", port=0).start()
    base = f"http://127.0.0.1:{status.port}"
    try:
        code, kind, body = get(f"{base}/progress")
        assert (code, kind) == (500, "application/json")
        assert json.loads(body) == {"error": "RuntimeError: store unavailable"}
        assert get(f"{base}/metrics")[0] == 404
        assert get(f"{base}/healthz")[0] == 200
    finally:
        status.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/healthz", timeout=5)


def test_status_server_from_env(monkeypatch):
    monkeypatch.delenv("INTERP_STATUS_PORT", raising=False)
    assert status_server_from_env(lambda: {}) is None
    monkeypatch.setenv("INTERP_STATUS_PORT", "0")
    monkeypatch.setenv("POD_IP", "127.0.0.1")
    status = status_server_from_env(lambda: {"phase": "dumping"})
    assert status is not None
    try:
        assert status.host == "127.0.0.1"
        assert json.loads(get(f"http://127.0.0.1:{status.port}/progress")[2]) == {"phase": "dumping"}
    finally:
        status.stop()


@pytest.mark.parametrize("value", ["http", "-1", "65536", "80.5"])
def test_status_server_from_env_rejects_bad_ports(monkeypatch, value):
    monkeypatch.setenv("INTERP_STATUS_PORT", value)
    with pytest.raises(ValueError, match="INTERP_STATUS_PORT"):
        status_server_from_env(lambda: {})


def test_termination_message_is_compact_json(monkeypatch, tmp_path):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("INTERP_TERMINATION_MESSAGE_PATH", str(path))
    write_termination_message({"tokens": 1024, "shards": ["a", "b"]})
    assert path.read_text() == '{"tokens":1024,"shards":["a","b"]}'


def test_termination_message_size_limit(monkeypatch, tmp_path):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("INTERP_TERMINATION_MESSAGE_PATH", str(path))
    write_termination_message({"m": "x" * (4096 - len('{"m":""}'))})
    assert len(path.read_bytes()) == 4096
    with pytest.raises(ValueError, match="4097 bytes"):
        write_termination_message({"m": "y" * (4097 - len('{"m":""}'))})
    assert path.read_text().startswith('{"m":"x')


def test_termination_message_is_a_no_op_without_a_place_to_write(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_TERMINATION_MESSAGE_PATH", str(tmp_path / "missing" / "termination-log"))
    write_termination_message({"ok": True})
    assert not (tmp_path / "missing").exists()
    monkeypatch.setenv("INTERP_TERMINATION_MESSAGE_PATH", str(tmp_path))  # a directory: open() fails
    write_termination_message({"ok": True})


def test_a_port_in_use_leaves_the_workload_running_without_a_server(monkeypatch):
    import socket

    from interp_workloads.progress import status_server_from_env

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        monkeypatch.setenv("INTERP_STATUS_PORT", str(taken.getsockname()[1]))
        monkeypatch.setenv("POD_IP", "127.0.0.1")
        assert status_server_from_env(lambda: {}) is None
    finally:
        taken.close()



def test_json_logs_on_a_terminal_get_log_lines_not_a_bar(monkeypatch):
    """One format per log: with logs forced to JSON on a terminal, progress comes as log lines there, never a bar."""
    import logging
    import sys
    import threading

    import structlog

    from interp_operator import logs

    terminal = TTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "0")
    monkeypatch.setattr(logs, "_renders_json", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    logs.configure("info", "json")
    try:
        progress = ProgressReporter(unit="tok", total=50, log_every_s=0.0)
        progress.update(20)
        progress.close()
        records = [json.loads(line) for line in terminal.getvalue().splitlines()]
        assert [(r["event"], r["done"]) for r in records] == [("progress", 20), ("progress", 20)]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        logging.captureWarnings(False)
