"""examples/monitoring: the alert rules, the dashboard and the PodMonitors name only metrics and labels that exist."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import yaml
from metrics_catalogue import Metric, series_names

from interp_operator.api.inferenceservice import InterpInferenceServiceSpec
from interp_operator.gang import builders, naming

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "monitoring"
METRIC_NAME = re.compile(r"\b(?:interp_(?:operator|dump|train|sae|serve)_|process_|python_)[a-z0-9_]*")
TARGET_LABELS = {"namespace", "pod", "container", "job", "instance", "service", "endpoint",
                 "interp_kind", "interp_name", "interp_rank"}
"""Labels a scrape adds to every series (Prometheus, prometheus-operator, the PodMonitors' relabelings)."""
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")
REQUIRED_ALERTS = {"InterpJobFailed", "InterpGangRestartingRepeatedly", "InterpProgressStuck", "InterpPlacementFailing",
                   "InterpServerErrors", "InterpServerOverloaded", "InterpOperatorReconcileErrors"}


def rules() -> list[dict]:
    document = yaml.safe_load((EXAMPLES / "prometheusrule.yaml").read_text())
    assert (document["apiVersion"], document["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    return [rule for group in document["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((EXAMPLES / "grafana-dashboard.json").read_text())


def dashboard_panels() -> Iterator[dict]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert and dashboard query."""
    found = [(f"alert {rule['alert']}", rule["expr"]) for rule in rules()]
    for panel in dashboard_panels():
        found += [(f"panel {panel['title']!r}", target["expr"]) for target in panel.get("targets", [])]
    return found


def test_the_alerts_asked_for_are_there_and_complete():
    alerts = rules()
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_metric_named_exists():
    known = series_names()
    texts = [*expressions(), ("PrometheusRule", (EXAMPLES / "prometheusrule.yaml").read_text()),
             ("dashboard", (EXAMPLES / "grafana-dashboard.json").read_text())]
    unknown = {(where, name) for where, text in texts for name in METRIC_NAME.findall(text) if name not in known}
    assert unknown == set()
    for where, expr in expressions():
        assert METRIC_NAME.search(expr), f"{where} queries no interp-operator metric"


def test_the_name_pattern_tells_metrics_from_labels():
    text = 'sum by (interp_name) (rate(interp_serve_requests_total{interp_kind="X"}[5m])) / process_open_fds'
    assert METRIC_NAME.findall(text) == ["interp_serve_requests_total", "process_open_fds"]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) of every vector selector, by the PromQL parser."""
    for variable in GRAFANA_INTERVALS:
        expr = expr.replace(variable, "5m")
    found: list[tuple[str, set[str]]] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name for m in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_every_query_parses_and_matches_only_labels_its_metric_has():
    known: dict[str, Metric] = series_names()
    for where, expr in expressions():
        chosen = selectors(expr)
        assert chosen, f"{where}: no selector"
        for name, labels in chosen:
            metric = known[name]
            extra = set(metric.labels) | ({"le"} if name.endswith("_bucket") else set()) | TARGET_LABELS
            assert labels <= extra, f"{where}: {name} has no label {sorted(labels - extra)}"


def test_the_dashboard_is_valid_grafana_json():
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "kind"} <= variables
    ids = [p["id"] for p in dashboard_panels() if p["type"] != "row"]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
    used = {m.group(1) for m in re.finditer(r"\$(\w+)", json.dumps(board)) if not m.group(1).startswith("__")}
    assert used <= variables, f"undefined variables {used - variables}"
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
            assert metric and metric[2] in series_names()[metric[1]].labels, variable["name"]


def test_pod_monitors_scrape_the_ports_and_labels_the_operator_gives_its_pods():
    monitors = list(yaml.safe_load_all((EXAMPLES / "podmonitors.yaml").read_text()))
    assert {m["kind"] for m in monitors} == {"PodMonitor"}
    pods = naming.pod_labels("SAETrainingJob", "x", 0, 0)
    server_port = f"port-{InterpInferenceServiceSpec.model_fields['port'].default}"
    assert [e["port"] for m in monitors for e in m["spec"]["podMetricsEndpoints"]] == [
        builders.STATUS_PORT_NAME, server_port]
    for monitor in monitors:
        selector = monitor["spec"]["selector"]
        assert selector["matchLabels"][naming.LABEL_MANAGED_BY] == naming.MANAGER
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["path"] == "/metrics"
            targets = {r["targetLabel"]: r["sourceLabels"][0] for r in endpoint["relabelings"]}
            assert set(targets) == {"interp_kind", "interp_name", "interp_rank"}
            # Prometheus' name of a pod label: __meta_kubernetes_pod_label_ and the label, non-alphanumerics as _.
            assert targets == {target: "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)
                               for target, label in (("interp_kind", naming.LABEL_KIND),
                                                     ("interp_name", naming.LABEL_NAME),
                                                     ("interp_rank", naming.LABEL_RANK))}
    assert {naming.LABEL_KIND, naming.LABEL_NAME, naming.LABEL_RANK} <= set(pods)
