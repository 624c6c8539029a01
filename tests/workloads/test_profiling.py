"""Profiling on demand: the annotation's format, and traces captured for exactly the requested steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interp_workloads.profiling import StepProfiler, parse_steps, read_annotations


@pytest.mark.parametrize(("value", "expected"), [
    ("100-110", (100, 110)),
    ("7", (7, 8)),
    ("0", (0, 1)),
    (" 3 - 5 ", (3, 5)),
    ("0-1", (0, 1)),
])
def test_parse_steps(value, expected):
    assert parse_steps(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "5-", "-5", "5-5", "9-3", "1-2-3", "1.5", "-1", "3..5"])
def test_parse_steps_rejects(value):
    with pytest.raises(ValueError, match="profile-steps"):
        parse_steps(value)


def test_read_annotations_of_a_downward_api_file(tmp_path):
    path = tmp_path / "annotations"
    # As the kubelet writes it: sorted keys, each value Go-quoted (%q).
    path.write_text(
        'interp.dev/profile-steps="3-5"\n'
        'kubectl.kubernetes.io/last-applied-configuration="{\\"kind\\":\\"Pod\\"}\\n"\n'
        'note="caf\\u00e9 \\U0001f600 tab\\there \\x41\\101 back\\\\slash"\n'
        'other="x"\n'
        'empty=""\n'
    )
    assert read_annotations(path) == {
        "interp.dev/profile-steps": "3-5",
        "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Pod"}\n',
        "note": "café \U0001f600 tab\there AA back\\slash",
        "other": "x",
        "empty": "",
    }
    assert read_annotations(tmp_path / "missing") == {}


class CapturingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def info(self, event: str, **fields) -> None:
        self.records.append(("info", event, fields))

    def warning(self, event: str, **fields) -> None:
        self.records.append(("warning", event, fields))

    def warnings(self) -> list[str]:
        return [event for level, event, _ in self.records if level == "warning"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tiny_work(step: int) -> None:
    a = torch.full((4, 4), float(step))
    (a @ a).sum()


def make_profiler(tmp_path: Path, **kwargs) -> tuple[StepProfiler, Path, CapturingLogger]:
    annotations = tmp_path / "podinfo" / "annotations"
    annotations.parent.mkdir()
    logger = CapturingLogger()
    kwargs.setdefault("check_every_s", 0.0)
    profiler = StepProfiler(tmp_path / "out", annotations_path=annotations, logger=logger, **kwargs)
    return profiler, annotations, logger


def annotate(path: Path, value: str) -> None:
    path.write_text(f'interp.dev/profile-steps="{value}"\nother="x"\n')


def step_markers(trace: Path) -> set[str]:
    events = json.loads(trace.read_text())["traceEvents"]
    assert "aten::mm" in {event.get("name") for event in events}  # the steps' work is in the trace
    return {event["name"] for event in events if str(event.get("name", "")).startswith("step ")}


def test_captures_the_window_once(tmp_path):
    profiler, annotations, logger = make_profiler(tmp_path)
    annotate(annotations, "3-5")
    for step in [*range(10), *range(10)]:  # a loop whose step counter starts over does not capture it again
        profiler.step(step)
        tiny_work(step)
    profiler.close()
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["profile-rank0-steps-3-5.json"]
    assert step_markers(tmp_path / "out" / files[0]) == {"step 3", "step 4"}
    assert logger.warnings() == []


def test_invalid_value_is_ignored_and_warned_once(tmp_path):
    profiler, annotations, logger = make_profiler(tmp_path)
    annotate(annotations, "soon")
    for step in range(6):
        profiler.step(step)
    profiler.close()
    assert not (tmp_path / "out").exists()
    assert logger.warnings() == ["ignoring an invalid profile annotation"]


def test_window_changed_while_running(tmp_path):
    profiler, annotations, _ = make_profiler(tmp_path, name="rank1")
    annotate(annotations, "2-4")
    for step in range(10):
        profiler.step(step)
        if step == 3:  # mid-capture: the running capture finishes, then the new window is taken
            annotate(annotations, "6-8")
        tiny_work(step)
    profiler.close()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["profile-rank1-steps-2-4.json", "profile-rank1-steps-6-8.json"]
    assert step_markers(out / "profile-rank1-steps-6-8.json") == {"step 6", "step 7"}


def test_a_window_seen_late_starts_at_the_current_step(tmp_path):
    profiler, annotations, logger = make_profiler(tmp_path)
    for step in range(8):
        if step == 3:
            annotate(annotations, "1-5")
        profiler.step(step)
        tiny_work(step)
    assert step_markers(tmp_path / "out" / "profile-rank0-steps-3-5.json") == {"step 3", "step 4"}
    assert any("already passed" in event for _, event, _ in logger.records)


def test_a_window_already_over_is_skipped(tmp_path):
    profiler, annotations, logger = make_profiler(tmp_path)
    annotate(annotations, "0-2")
    for step in range(5, 8):
        profiler.step(step)
    profiler.close()
    assert not (tmp_path / "out").exists()
    assert logger.warnings() == ["profile window already over; not captured"]


def test_close_writes_a_partial_window(tmp_path):
    profiler, annotations, _ = make_profiler(tmp_path)
    annotate(annotations, "2-100")
    for step in range(5):
        profiler.step(step)
        tiny_work(step)
    profiler.close()
    profiler.close()
    assert step_markers(tmp_path / "out" / "profile-rank0-steps-2-5.json") == {"step 2", "step 3", "step 4"}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["profile-rank0-steps-2-5.json"]


def test_annotations_are_read_at_most_every_check_interval(tmp_path):
    clock = Clock()
    profiler, annotations, _ = make_profiler(tmp_path, check_every_s=5.0, clock=clock)
    profiler.step(0)
    annotate(annotations, "2-3")
    clock.now = 4.9
    for step in (1, 2, 3):
        profiler.step(step)
    assert not (tmp_path / "out").exists()  # the file changed, but no re-read was due
    annotate(annotations, "5-6")
    clock.now = 5.0
    for step in (4, 5, 6):
        profiler.step(step)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["profile-rank0-steps-5-6.json"]


def test_default_annotations_path_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_PODINFO_DIR", str(tmp_path))
    assert StepProfiler(tmp_path / "out", logger=CapturingLogger()).annotations_path == tmp_path / "annotations"
