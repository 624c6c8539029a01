"""A scheduler for pods whose schedulerName is served here: resources, nodeSelector, required node
affinity, taints and tolerations. Pods for other schedulers stay Pending, as on a real cluster."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from fractions import Fraction
from typing import Any

from .. import quantity
from ..logs import get_logger
from . import meta
from .api import Api
from .nodes import is_ready
from .recorder import Recorder
from .store import Event

Obj = dict[str, Any]
_log = get_logger("interp_operator.local.scheduler")
_TERMINAL = ("Succeeded", "Failed")


def pod_requests(pod: Obj) -> dict[str, Fraction]:
    """Effective requests: max(sum of containers, largest init container) per resource (+1 pod)."""
    spec = pod.get("spec") or {}

    def requests(container: Obj) -> dict[str, Fraction]:
        resources = container.get("resources") or {}
        wanted = dict(resources.get("limits") or {})  # limits stand in for missing requests
        wanted.update(resources.get("requests") or {})
        return {k: quantity.parse_quantity(v) for k, v in wanted.items()}

    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or []:
        for key, value in requests(container).items():
            total[key] = total.get(key, Fraction(0)) + value
    for container in spec.get("initContainers") or []:
        for key, value in requests(container).items():
            total[key] = max(total.get(key, Fraction(0)), value)
    total["pods"] = Fraction(1)
    return total


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    for tol in tolerations or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol["key"] == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _match_expression(expr: Obj, labels: dict[str, str]) -> bool:
    key, op, values = str(expr.get("key", "")), expr.get("operator"), expr.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present:
        try:
            value, bound = int(labels[key]), int(values[0])
        except (ValueError, IndexError):
            return False
        return value > bound if op == "Gt" else value < bound
    return False


def affinity_matches(pod: Obj, node: Obj) -> bool:
    spec = pod.get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not required:
        return True
    fields = {"metadata.name": node["metadata"]["name"]}
    for term in required.get("nodeSelectorTerms") or []:
        if all(_match_expression(e, labels) for e in term.get("matchExpressions") or []) and \
                all(_match_expression(e, fields) for e in term.get("matchFields") or []):
            return True
    return False


class Scheduler:
    def __init__(self, api: Api, names: tuple[str, ...] = ("default-scheduler",)):
        self.api = api
        self.names = names
        self._wake = asyncio.Event()
        self.recorder = Recorder(api, "default-scheduler")
        # Kept up to date from store events so that a pass costs O(pending pods), not O(all pods).
        self._pending: set[tuple[str, str]] = set()
        self._used: dict[str, dict[str, Fraction]] = {}
        api.store.add_listener(self._on_event)

    def _on_event(self, storage_key: str, event: Event) -> None:
        if storage_key in ("/nodes", "/persistentvolumeclaims"):  # a new claim may unblock a pending pod
            self._wake.set()
            return
        if storage_key != "/pods":
            return
        if event.prev is not None:
            self._account(event.prev, -1)
        if event.type != "DELETED":
            self._account(event.obj, +1)
        md = event.obj["metadata"]
        key = (md["namespace"], md["name"])
        if event.type != "DELETED" and self._wants_scheduling(event.obj):
            self._pending.add(key)
            self._wake.set()
        else:
            self._pending.discard(key)
            if event.type == "DELETED" or (event.obj.get("status") or {}).get("phase") in _TERMINAL:
                self._wake.set()  # freed resources may fit a pending pod

    def _wants_scheduling(self, pod: Obj) -> bool:
        return not pod["spec"].get("nodeName") and pod["spec"].get("schedulerName") in self.names \
            and not pod["metadata"].get("deletionTimestamp") and pod["status"].get("phase") not in _TERMINAL

    def _account(self, pod: Obj, sign: int) -> None:
        node = pod["spec"].get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in _TERMINAL:
            return
        bucket = self._used.setdefault(node, {})
        for key, value in pod_requests(pod).items():
            bucket[key] = bucket.get(key, Fraction(0)) + sign * value

    async def run(self) -> None:
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.schedule_pending()
            except Exception:  # keep scheduling the rest
                _log.exception("scheduling pass failed")
            await asyncio.sleep(0)

    def schedule_pending(self) -> None:
        pending = [p for p in (self.api.store.get("/pods", key) for key in list(self._pending))
                   if p is not None and self._wants_scheduling(p)]
        if not pending:
            return
        nodes = sorted(self.api.store.items("/nodes"), key=lambda n: n["metadata"]["name"])
        for pod in sorted(pending, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"])):
            self._schedule(pod, nodes, self._used)

    def _missing_claim(self, pod: Obj) -> str | None:
        """A claim the pod mounts that does not exist (kube-scheduler's VolumeBinding refuses the pod for it)."""
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and self.api.store.get("/persistentvolumeclaims", (namespace, claim)) is None:
                return str(claim)
        return None

    def _schedule(self, pod: Obj, nodes: list[Obj], used: dict[str, dict[str, Fraction]]) -> None:
        claim = self._missing_claim(pod)
        if claim is not None:
            self._mark_unschedulable(pod, len(nodes), Counter(), f'persistentvolumeclaim "{claim}" not found')
            return
        wanted = pod_requests(pod)
        reasons: Counter[str] = Counter()
        best: tuple[Fraction, str] | None = None
        for node in nodes:
            reason = self._unfit(pod, node, wanted, used.get(node["metadata"]["name"], {}))
            if reason:
                reasons[reason] += 1
                continue
            score = self._load(node, wanted, used.get(node["metadata"]["name"], {}))
            if best is None or (score, node["metadata"]["name"]) < best:
                best = (score, node["metadata"]["name"])
        if best is None:
            self._mark_unschedulable(pod, len(nodes), reasons)
            return
        self.bind(pod, best[1])  # the bind's store event accounts the pod's requests to the node

    def _unfit(self, pod: Obj, node: Obj, wanted: dict[str, Fraction], used: dict[str, Fraction]) -> str:
        if not is_ready(node):
            return "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
        if (node.get("spec") or {}).get("unschedulable"):
            return "node(s) were unschedulable"
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and \
                    not tolerates(pod["spec"].get("tolerations") or [], taint):
                shown = f": {taint['value']}" if taint.get("value") else ": "
                return f"node(s) had untolerated taint {{{taint['key']}{shown}}}"
        if not affinity_matches(pod, node):
            return "node(s) didn't match Pod's node affinity/selector"
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        for key, value in wanted.items():
            if value == 0:
                continue
            have = quantity.parse_quantity(allocatable.get(key, "0"))
            if used.get(key, Fraction(0)) + value > have:
                return "Too many pods" if key == "pods" else f"Insufficient {key}"
        return ""

    def _load(self, node: Obj, wanted: dict[str, Fraction], used: dict[str, Fraction]) -> Fraction:
        """The busiest resource fraction after placing the pod: lower spreads load (least allocated)."""
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        fractions = []
        for key in ("cpu", "memory", "nvidia.com/gpu"):
            have = quantity.parse_quantity(allocatable.get(key, "0"))
            if have > 0:
                fractions.append((used.get(key, Fraction(0)) + wanted.get(key, Fraction(0))) / have)
        return max(fractions) if fractions else Fraction(0)

    def bind(self, pod: Obj, node_name: str) -> None:
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node_name
        _set_condition(new, {"type": "PodScheduled", "status": "True", "lastTransitionTime": meta.now()})
        self.api.store.put("/pods", new)
        md = pod["metadata"]
        self.recorder.event(pod, "Scheduled", f"Successfully assigned {md['namespace']}/{md['name']} to {node_name}")

    def _mark_unschedulable(self, pod: Obj, node_count: int, reasons: Counter[str], detail: str = "") -> None:
        detail = detail or ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        message = f"0/{node_count} nodes are available" + (f": {detail}." if detail else ".")
        current = next((c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), None)
        if current and current.get("status") == "False" and current.get("message") == message:
            return
        new = copy.deepcopy(pod)
        _set_condition(new, {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                             "message": message, "lastTransitionTime": meta.now()})
        self.api.store.put("/pods", new)
        self.recorder.event(pod, "FailedScheduling", message, "Warning")


def _set_condition(pod: Obj, condition: Obj) -> None:
    conditions = [c for c in pod["status"].get("conditions") or [] if c["type"] != condition["type"]]
    pod["status"]["conditions"] = [*conditions, condition]
