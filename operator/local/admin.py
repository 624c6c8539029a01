"""Fault injection over HTTP for chaos runs and out-of-process tests (same auth as the API).

POST /interp-local/v1/namespaces/{ns}/pods/{name}/kill[?container=c&signal=TERM]  signal a pod's processes
POST /interp-local/v1/nodes/{name}/not-ready[?killProcesses=false]                 the node stops reporting
POST /interp-local/v1/nodes/{name}/ready                                           the node comes back
Deleting a node is the ordinary ``DELETE /api/v1/nodes/{name}``.
"""

from __future__ import annotations

import signal
from typing import Any

from aiohttp import web

from .errors import ApiError, bad_request, method_not_allowed
from .kubelet import Kubelet


def _signal(name: str) -> int:
    name = name.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))
    except AttributeError as exc:
        raise bad_request(f"unknown signal {name!r}") from exc


async def handle(kubelet: Kubelet | None, request: web.Request, parts: list[str]) -> dict[str, Any]:
    if kubelet is None:
        raise ApiError(404, "NotFound", "fault injection needs the kubelet (run_pods is off)")
    if request.method != "POST":
        raise method_not_allowed("fault injection endpoints take POST")
    q = request.query
    if len(parts) == 7 and parts[2] == "namespaces" and parts[4] == "pods" and parts[6] == "kill":
        count = kubelet.kill(parts[3], parts[5], q.get("container"), _signal(q.get("signal", "KILL")))
        return {"kind": "Status", "apiVersion": "v1", "status": "Success", "message": f"signalled {count} process(es)"}
    if len(parts) == 5 and parts[2] == "nodes" and parts[4] in ("ready", "not-ready"):
        ready = parts[4] == "ready"
        kubelet.set_node_ready(parts[3], ready, kill_processes=q.get("killProcesses", "true") != "false")
        return {"kind": "Status", "apiVersion": "v1", "status": "Success",
                "message": f"node {parts[3]} is {'Ready' if ready else 'NotReady'}"}
    raise ApiError(404, "NotFound", f"unknown fault endpoint {request.path}")
