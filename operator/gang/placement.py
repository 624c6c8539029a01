"""All-or-nothing, topology-aware placement of a gang (the builtin gang scheduler), as a pure function.

The operator plans every rank onto a node before creating any pod and pins each pod to its node, so a gang is never
partly started, and two gangs cannot each take half of the cluster: capacity reserved by gangs that are created but
not yet running counts as used.

Order of preference: the largest world size in [min, max] that fits now; for that size, the tightest topology level
(keys are listed tightest first) and, within it, the domain that fits most snugly (best fit keeps big domains free
for big gangs); ranks fill nodes in order so neighbouring ranks share a node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from ..quantity import ResourceMap, format_quantity, parse_resources, subtract

UNLIMITED = 1 << 30


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]
    allocatable: ResourceMap
    taints: tuple[Mapping[str, Any], ...] = ()
    ready: bool = True
    unschedulable: bool = False

    @classmethod
    def from_api(cls, node: Mapping[str, Any]) -> NodeInfo:
        status = node.get("status", {})
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
        return cls(
            name=node["metadata"]["name"],
            labels=node["metadata"].get("labels", {}),
            allocatable=parse_resources(status.get("allocatable", {})),
            taints=tuple(node.get("spec", {}).get("taints", [])),
            ready=ready,
            unschedulable=bool(node.get("spec", {}).get("unschedulable")),
        )


@dataclass(frozen=True)
class GangRequest:
    per_pod: ResourceMap
    min_size: int
    max_size: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    topology_keys: Sequence[str] = ()
    topology_mode: Literal["Required", "Preferred"] = "Required"
    node_affinity_terms: Sequence[Mapping[str, Any]] = ()
    """The pods' required node affinity terms (ORed, as in the core API); empty: every node."""


@dataclass(frozen=True)
class Placement:
    size: int
    nodes: tuple[str, ...]
    """Planned node of each rank."""
    topology_key: str | None = None
    domain: str | None = None


@dataclass(frozen=True)
class Unplaceable:
    reason: str
    message: str


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator", "Equal") == "Exists":
            if not tol.get("key") or tol["key"] == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _requirement_holds(requirement: Mapping[str, Any], value: str | None) -> bool:
    operator, values = requirement["operator"], requirement.get("values") or []
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if value is None or not value.lstrip("-").isdigit():  # Gt and Lt compare integers; other values never match
        return False
    return int(value) > int(values[0]) if operator == "Gt" else int(value) < int(values[0])


def matches_node_affinity(terms: Sequence[Mapping[str, Any]], node: NodeInfo) -> bool:
    """Whether ``node`` meets required node selector terms: any one term whose requirements all hold."""
    fields = {"metadata.name": node.name}
    return not terms or any(
        all(_requirement_holds(r, node.labels.get(r["key"])) for r in term.get("matchExpressions") or ())
        and all(_requirement_holds(r, fields.get(r["key"])) for r in term.get("matchFields") or ())
        for term in terms
    )


def eligible(node: NodeInfo, request: GangRequest) -> bool:
    return (
        node.ready
        and not node.unschedulable
        and all(node.labels.get(k) == v for k, v in request.node_selector.items())
        and all(tolerates(request.tolerations, t) for t in node.taints)
        and matches_node_affinity(request.node_affinity_terms, node)
    )


def pods_that_fit(free: ResourceMap, per_pod: ResourceMap) -> int:
    counts = [int(free.get(name, Fraction(0)) // amount) for name, amount in per_pod.items() if amount > 0]
    return max(0, min(counts, default=UNLIMITED))


def _fill(nodes: Sequence[NodeInfo], capacity: Mapping[str, int], size: int) -> tuple[str, ...]:
    # Fullest-first keeps the gang on as few nodes as possible; names break ties so plans are deterministic.
    ranks: list[str] = []
    for node in sorted(nodes, key=lambda n: (-capacity[n.name], n.name)):
        take = min(capacity[node.name], size - len(ranks))
        ranks += [node.name] * take
        if len(ranks) == size:
            break
    return tuple(ranks)


def place(request: GangRequest, nodes: Sequence[NodeInfo], used: Mapping[str, ResourceMap]) -> Placement | Unplaceable:
    """Plan the gang onto ``nodes`` given resources already ``used`` (bound or reserved) per node."""
    candidates = [n for n in nodes if eligible(n, request)]
    capacity = {
        n.name: pods_that_fit(subtract(n.allocatable, used.get(n.name, {})), request.per_pod) for n in candidates
    }
    total = sum(capacity.values())
    for size in range(request.max_size, request.min_size - 1, -1):
        for key in request.topology_keys:
            domains: dict[str, list[NodeInfo]] = {}
            for node in candidates:
                if key in node.labels:
                    domains.setdefault(node.labels[key], []).append(node)
            fitting = [
                (sum(capacity[n.name] for n in members), value, members)
                for value, members in domains.items()
                if sum(capacity[n.name] for n in members) >= size
            ]
            if fitting:
                _, value, members = min(fitting, key=lambda f: (f[0], f[1]))
                return Placement(size, _fill(members, capacity, size), key, value)
        if (not request.topology_keys or request.topology_mode == "Preferred") and total >= size:
            return Placement(size, _fill(candidates, capacity, size))
    return _explain(request, nodes, candidates, capacity, total)


def _explain(
    request: GangRequest,
    nodes: Sequence[NodeInfo],
    candidates: Sequence[NodeInfo],
    capacity: Mapping[str, int],
    total: int,
) -> Unplaceable:
    per_pod = ", ".join(f"{k}={format_quantity(v)}" for k, v in sorted(request.per_pod.items())) or "no resources"
    size = request.min_size if request.min_size == request.max_size else f"{request.min_size}-{request.max_size}"
    parts = [f"a gang of {size} pods ({per_pod} each) does not fit now"]
    if request.topology_keys and request.topology_mode == "Required":
        best = []
        for key in request.topology_keys:
            sums: dict[str, int] = {}
            for node in candidates:
                if key in node.labels:
                    sums[node.labels[key]] = sums.get(node.labels[key], 0) + capacity[node.name]
            if sums:
                value, room = max(sums.items(), key=lambda kv: (kv[1], kv[0]))
                best.append(f"{key}={value} has room for {room}")
            else:
                best.append(f"no eligible node has label {key}")
        parts.append("largest domain per topology level: " + "; ".join(best))
    parts.append(f"room for {total} in the whole cluster")
    excluded = len(nodes) - len(candidates)
    if excluded:
        parts.append(f"{excluded} of {len(nodes)} nodes excluded "
                     "(not ready, cordoned, taints, nodeSelector or node affinity)")
    return Unplaceable("InsufficientCapacity", "; ".join(parts))

