"""Placement of a gang: all-or-nothing, largest elastic size, tightest topology domain, clear reasons (table-driven)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from interp_operator.api import kind_info
from interp_operator.gang.placement import GangRequest, NodeInfo, Placement, Unplaceable, place
from interp_operator.kinds import dump
from interp_operator.quantity import parse_resources


class Cluster:
    """Chainable builder of nodes and their usage."""

    def __init__(self) -> None:
        self.nodes: list[NodeInfo] = []
        self.used: dict[str, dict] = {}

    def node(self, name: str, gpus: int = 8, cpu: str = "64", ready: bool = True, taints=(), **labels) -> Cluster:
        alloc = parse_resources({"cpu": cpu, "memory": "512Gi", "nvidia.com/gpu": gpus})
        self.nodes.append(NodeInfo(name, labels, alloc, tuple(taints), ready))
        return self

    def rack(self, rack: str, zone: str, count: int, gpus: int = 8) -> Cluster:
        for i in range(count):
            self.node(f"{rack}-n{i}", gpus=gpus, rack=rack, zone=zone)
        return self

    def use(self, node: str, gpus: int) -> Cluster:
        self.used[node] = parse_resources({"nvidia.com/gpu": gpus})
        return self


def gang(size: int, gpus: int = 8, min_size: int | None = None, keys=(), mode="Required", **extra) -> GangRequest:
    return GangRequest(parse_resources({"nvidia.com/gpu": gpus, "cpu": "8"}), min_size or size, size,
                       topology_keys=keys, topology_mode=mode, **extra)


CASES = [
    # name, cluster, request, expected (size, key, domain) or reason substring
    ("fits anywhere", Cluster().node("a").node("b"), gang(2), (2, None, None)),
    ("too big", Cluster().node("a").node("b"), gang(3), "room for 2 in the whole cluster"),
    ("partial node capacity counts", Cluster().node("a").use("a", 4), gang(2, gpus=2), (2, None, None)),
    ("used capacity blocks", Cluster().node("a").use("a", 7), gang(1, gpus=2), "room for 0"),
    ("tightest domain first", Cluster().rack("r1", "z1", 2).rack("r2", "z1", 4), gang(2, keys=("rack", "zone")),
     (2, "rack", "r1")),
    ("best fit rack", Cluster().rack("r1", "z1", 4).rack("r2", "z1", 3), gang(3, keys=("rack", "zone")),
     (3, "rack", "r2")),
    ("falls back to zone", Cluster().rack("r1", "z1", 2).rack("r2", "z1", 2), gang(3, keys=("rack", "zone")),
     (3, "zone", "z1")),
    ("required and too wide", Cluster().rack("r1", "z1", 2).rack("r2", "z2", 2), gang(3, keys=("rack", "zone")),
     "zone=z2 has room for 2"),
    ("preferred spreads", Cluster().rack("r1", "z1", 2).rack("r2", "z2", 2),
     gang(3, keys=("rack", "zone"), mode="Preferred"), (3, None, None)),
    ("elastic takes largest that fits", Cluster().node("a").node("b").node("c"), gang(8, min_size=2), (3, None, None)),
    ("elastic below min", Cluster().node("a"), gang(8, min_size=2), "gang of 2-8 pods"),
    ("elastic prefers size over tightness", Cluster().rack("r1", "z1", 2).rack("r2", "z1", 2),
     gang(4, min_size=2, keys=("rack", "zone")), (4, "zone", "z1")),
    ("not ready excluded", Cluster().node("a").node("b", ready=False), gang(2), "1 of 2 nodes excluded"),
    ("taint needs toleration", Cluster().node("a", taints=[{"key": "gpu", "effect": "NoSchedule"}]), gang(1),
     "room for 0"),
    ("toleration admits", Cluster().node("a", taints=[{"key": "gpu", "effect": "NoSchedule"}]),
     gang(1, tolerations=[{"key": "gpu", "operator": "Exists"}]), (1, None, None)),
    ("node selector", Cluster().node("a", pool="cpu").node("b", pool="gpu"), gang(1, node_selector={"pool": "gpu"}),
     (1, None, None)),
    ("cpu is a limit too", Cluster().node("a", cpu="12"), gang(2, gpus=1), "room for 1"),
]


@pytest.mark.parametrize(("name", "cluster", "request_", "expected"), CASES, ids=[c[0] for c in CASES])
def test_place(name, cluster, request_, expected):
    result = place(request_, cluster.nodes, cluster.used)
    if isinstance(expected, str):
        assert isinstance(result, Unplaceable), result
        assert result.reason == "InsufficientCapacity"
        assert expected in result.message, result.message
        return
    assert isinstance(result, Placement), result
    assert (result.size, result.topology_key, result.domain) == expected
    assert len(result.nodes) == result.size
    by_name = {n.name: n for n in cluster.nodes}
    for node, count in Counter(result.nodes).items():  # the plan never overbooks a node
        free = by_name[node].allocatable["nvidia.com/gpu"] - cluster.used.get(node, {}).get("nvidia.com/gpu", 0)
        assert count * request_.per_pod["nvidia.com/gpu"] <= free
    if result.domain is not None:
        assert {by_name[n].labels[result.topology_key] for n in result.nodes} == {result.domain}


def test_ranks_fill_nodes_in_order():
    cluster = Cluster().node("a", gpus=8).node("b", gpus=8)
    result = place(gang(4, gpus=4), cluster.nodes, cluster.used)
    assert result.nodes == ("a", "a", "b", "b")


def test_two_gangs_never_split_the_cluster():
    """With the first gang's reservation counted, the second waits instead of taking half."""
    cluster = Cluster().node("a").node("b")
    first = place(gang(2), cluster.nodes, cluster.used)
    reserved = {n: parse_resources({"nvidia.com/gpu": 8}) for n in first.nodes}
    second = place(gang(2), cluster.nodes, reserved)
    assert isinstance(first, Placement) and isinstance(second, Unplaceable)


H100 = {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]},
                             {"key": "maintenance", "operator": "DoesNotExist"}]}
NEWER = {"matchExpressions": [{"key": "generation", "operator": "Gt", "values": ["8"]}]}


@pytest.mark.parametrize(("labels", "name", "terms", "fits"), [
    ({"gpu": "h100"}, "a", [H100], True),
    ({"gpu": "h100", "maintenance": "yes"}, "a", [H100], False),
    ({"gpu": "a100"}, "a", [H100], False),
    ({"gpu": "a100", "generation": "9"}, "a", [H100, NEWER], True),  # terms are ORed
    ({"generation": "8"}, "a", [NEWER], False),
    ({"generation": "x"}, "a", [NEWER], False),
    ({}, "a", [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["a"]}]}], False),
    ({}, "b", [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["a"]}]}], True),
    ({}, "a", [], True),
])
def test_the_plan_honours_required_node_affinity(labels, name, terms, fits):
    cluster = Cluster().node(name, **labels)
    result = place(gang(1, node_affinity_terms=terms), cluster.nodes, cluster.used)
    assert isinstance(result, Placement) == fits, result
    if not fits:
        assert "node affinity" in result.message


def test_the_adapter_hands_the_worker_node_affinity_to_the_plan():
    body = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "activationdump.yaml").read_text())
    body["spec"]["worker"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [H100, NEWER]}}}
    request = dump.adapter().gang_request(kind_info("ActivationDump").parse(body))
    assert list(request.node_affinity_terms) == [H100, NEWER]
