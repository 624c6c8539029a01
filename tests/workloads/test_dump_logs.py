"""One log format per dump pod: with stderr a pipe (a pod), every line is a JSON record, progress included, and no
library draws a bar; on a terminal, the progress bar."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from dump_support import dump_spec, write_config

from interp_workloads.testing import build_tiny_model, write_corpus

INHERITED_SETTINGS = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "INTERP_LOG_FORMAT", "INTERP_LOG_LEVEL",
                      "INTERP_STATUS_PORT")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dump-logs")
    model = build_tiny_model("gpt2", root / "model", n_layers=2)
    corpus = write_corpus(root / "corpus.jsonl", documents=30)
    return write_config(root / "cfg.json", dump_spec(model, corpus, root / "unused", batchSize=1))


def environment(tmp_path: Path) -> dict[str, str]:
    """A pod's environment (a store of its own under ``tmp_path``), none of the settings the test process may have
    made for itself."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_SETTINGS}
    return env | {"RANK": "0", "WORLD_SIZE": "1", "HF_HUB_OFFLINE": "1", "INTERP_PATH_OUTPUT": str(tmp_path / "out"),
                  "INTERP_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log")}


def dump_command(config: Path) -> list[str]:
    return [sys.executable, "-P", "-m", "interp_workloads.dump", "--config", str(config)]


def test_a_dump_with_a_piped_stderr_logs_json_lines_only(config, tmp_path):
    result = subprocess.run(dump_command(config), env=environment(tmp_path), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""
    records = []
    for line in result.stderr.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line of the pod's log is not JSON: {line!r}")
    events = [r["event"] for r in records]
    assert "progress" in events and events[-1] == "done"
    assert all(isinstance(r, dict) and (r.get("job"), r.get("rank")) == ("test-dump", 0) for r in records), \
        [r for r in records if r.get("job") != "test-dump"]


def test_a_refused_config_is_a_json_line_too(tmp_path):
    broken = tmp_path / "cfg.json"
    broken.write_text("{not json")
    result = subprocess.run(dump_command(broken), env=environment(tmp_path), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 3
    (record,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert (record["event"], record["level"], record["component"]) == ("invalid config", "error", "dump")


def test_a_dump_on_a_terminal_draws_the_bar(config, tmp_path):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a new pty is 0 columns wide
    process = subprocess.Popen(dump_command(config), env=environment(tmp_path), stdin=subprocess.DEVNULL,
                               stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: every process holding it has exited
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(300) == 0, output.decode(errors="replace")[-3000:]
    text = output.decode(errors="replace")
    assert "tok/s" in text and "100%" in text  # tqdm's bar, ending full
    assert '"event": "progress"' not in text
