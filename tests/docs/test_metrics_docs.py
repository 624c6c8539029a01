"""docs/metrics.md lists every metric the code registers, with its type and labels, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from metrics_catalogue import Metric, every_metric, registered

PAGE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_:][a-z0-9_:]*)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \| (?P<meaning>[^|]+) \|$",
                 re.M)


def documented() -> dict[str, Metric]:
    rows: dict[str, Metric] = {}
    for row in ROW.finditer(PAGE.read_text()):
        name, kind = row["name"], row["type"]
        assert name not in rows, f"{name} is listed twice"
        assert row["meaning"].strip(), f"{name} has no meaning"
        labels = frozenset(re.findall(r"`([a-z_]+)`", row["labels"]))
        family = name.removesuffix("_total") if kind == "counter" else name
        rows[name] = Metric(family, kind, labels)
    return rows


def test_every_registered_metric_is_documented_with_its_type_and_labels():
    docs, code = documented(), every_metric()
    assert sorted(set(code) - set(docs)) == [], "registered but not in docs/metrics.md"
    assert sorted(set(docs) - set(code)) == [], "in docs/metrics.md but registered nowhere"
    wrong = {name: (docs[name], code[name]) for name in code if docs[name] != code[name]}
    assert wrong == {}, "type or labels differ (documented, registered)"


def test_each_process_has_its_metrics():
    found = registered()
    assert {"interp_operator_object_phase", "interp_operator_reconcile_errors"} <= {m.family for m in found["operator"]}
    for process, prefix in (("dump", "interp_dump_"), ("trainer", "interp_"), ("server", "interp_serve_")):
        assert found[process] and all(m.family.startswith(prefix) for m in found[process]), process


def test_the_parser_reads_a_documented_row():
    row = "| `interp_x_total` | counter | `kind`, `scope` | Things. |"
    (match,) = ROW.finditer(row)
    assert (match["name"], match["type"], match["labels"]) == ("interp_x_total", "counter", "`kind`, `scope`")
