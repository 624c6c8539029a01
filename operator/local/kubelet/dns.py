"""Name resolution for pods: a cluster hosts file and a Python resolver hook.

Service and pod names resolve to pod IPs (127.x.y.z): a headless Service to its ready pods' IPs, a
ClusterIP Service to its ready pods' IPs as well (there is no kube-proxy; use port == targetPort), and
``<hostname>.<subdomain>.<namespace>.svc.cluster.local`` to that pod. The hook in ``sitecustomize.py``
is put first on each pod's PYTHONPATH; it makes ``socket.getaddrinfo`` / ``gethostbyname`` consult the
hosts file, with the pod's namespace as the search domain. Non-Python programs can read the same file
(path in ``INTERP_LOCAL_HOSTS``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

SITECUSTOMIZE = '''"""interp-local: resolve cluster names (Services, pod hostnames) from the hosts file."""
import json
import os
import socket

_HOSTS = os.environ.get("INTERP_LOCAL_HOSTS")
_NAMESPACE = os.environ.get("INTERP_LOCAL_NAMESPACE", "default")
_getaddrinfo = socket.getaddrinfo
_gethostbyname = socket.gethostbyname


def _lookup(host):
    if not _HOSTS or not isinstance(host, str) or not host or host[0].isdigit():
        return None
    try:
        with open(_HOSTS) as handle:
            table = json.load(handle)
    except (OSError, ValueError):
        return None
    name = host.rstrip(".")
    for candidate in (name, name + "." + _NAMESPACE, name + "." + _NAMESPACE + ".svc",
                      name + ".svc.cluster.local", name + "." + _NAMESPACE + ".svc.cluster.local"):
        if candidate in table:
            return table[candidate]
    return None


def getaddrinfo(host, *args, **kwargs):
    ips = _lookup(host)
    if ips:
        out = []
        for ip in ips:
            out.extend(_getaddrinfo(ip, *args, **kwargs))
        return out
    return _getaddrinfo(host, *args, **kwargs)


def gethostbyname(host):
    ips = _lookup(host)
    return ips[0] if ips else _gethostbyname(host)


socket.getaddrinfo = getaddrinfo
socket.gethostbyname = gethostbyname
'''


def _names(name: str, namespace: str) -> list[str]:
    return [f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


def build_table(services: list[Obj], pods: list[Obj]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    ready_pods = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp"):
            continue
        spec, md = pod["spec"], pod["metadata"]
        if spec.get("hostname") and spec.get("subdomain"):
            for name in _names(f"{spec['hostname']}.{spec['subdomain']}", md["namespace"]):
                table[name] = [ip]
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])
        ready_pods.append((pod, ip, ready))
    for svc in services:
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            continue
        namespace = svc["metadata"]["namespace"]
        publish_all = (svc.get("spec") or {}).get("publishNotReadyAddresses", False)
        ips = sorted(ip for pod, ip, ready in ready_pods
                     if pod["metadata"]["namespace"] == namespace and (ready or publish_all)
                     and all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items()))
        if ips:
            for name in _names(svc["metadata"]["name"], namespace):
                table[name] = ips
    return table


def write_table(path: Path, table: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hosts-")
    with os.fdopen(fd, "w") as handle:
        json.dump(table, handle, sort_keys=True)
    os.replace(tmp, path)


def install_hook(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory
