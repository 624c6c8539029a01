"""Container environment: env / envFrom with the downward API, $(VAR) expansion, mount path rewriting."""

from __future__ import annotations

import base64
import math
import os
import re
from fractions import Fraction
from typing import Any

from ... import quantity

Obj = dict[str, Any]


class EnvError(Exception):
    """A container's environment cannot be built (missing ConfigMap key, bad fieldRef...)."""


def field_ref(pod: Obj, path: str) -> str:
    md = pod["metadata"]
    simple = {
        "metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""), "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod.get("status", {}).get("podIP", ""), "status.hostIP": "127.0.0.1",
        "status.podIPs": ",".join(i["ip"] for i in pod.get("status", {}).get("podIPs") or []),
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (md.get(match.group(1)) or {}).get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = md.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise EnvError(f"unsupported fieldRef fieldPath {path!r}")


def resource_ref(pod: Obj, ref: Obj, default_container: Obj, node_allocatable: Obj) -> str:
    name = ref.get("containerName") or default_container.get("name")
    container = next((c for c in pod["spec"].get("containers") or [] if c.get("name") == name), default_container)
    kind, _, resource = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(resource)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(resource)
    if value is None:
        value = node_allocatable.get(resource, "0")  # an unset limit reports the node's allocatable
    divisor = quantity.parse_quantity(ref.get("divisor") or "1")
    amount = quantity.parse_quantity(value) / (divisor if divisor else Fraction(1))
    return str(math.ceil(amount))


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: $$ escapes, unknown references stay as written."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


def _lookup(store_get: Any, kind: str, namespace: str, ref: Obj) -> Obj | None:
    obj = store_get(f"/{kind}", (namespace, ref.get("name", "")))
    if obj is None and not ref.get("optional"):
        raise EnvError(f'{kind[:-1]} "{ref.get("name")}" not found')
    return obj


def _data(obj: Obj, secret: bool) -> dict[str, str]:
    data = dict(obj.get("data") or {})
    if secret:
        decoded = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        decoded.update(obj.get("stringData") or {})
        return decoded
    return data


def build_env(pod: Obj, container: Obj, base: dict[str, str], store_get: Any,
              node_allocatable: Obj) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            obj = _lookup(store_get, "configmaps", namespace, source["configMapRef"])
            env.update({prefix + k: v for k, v in (_data(obj, False) if obj else {}).items()})
        elif "secretRef" in source:
            obj = _lookup(store_get, "secrets", namespace, source["secretRef"])
            env.update({prefix + k: v for k, v in (_data(obj, True) if obj else {}).items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
            continue
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = resource_ref(pod, source["resourceFieldRef"], container, node_allocatable)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if secret else "configMapKeyRef"]
            obj = _lookup(store_get, "secrets" if secret else "configmaps", namespace, ref)
            data = _data(obj, secret) if obj else {}
            if ref["key"] not in data:
                if not ref.get("optional"):
                    raise EnvError(f'couldn\'t find key {ref["key"]} in {"Secret" if secret else "ConfigMap"} '
                                   f'{namespace}/{ref.get("name")}')
                continue
            env[name] = data[ref["key"]]
        else:
            env[name] = ""
    return env


class PathMap:
    """Container paths → local ones: volume mountPaths (directories, longest prefix first) and single files (a
    container's termination message file), which the kubelet provides outside of any volume."""

    def __init__(self, mounts: dict[str, str], files: dict[str, str] | None = None):
        self.mounts = sorted(((p.rstrip("/") or "/", local) for p, local in mounts.items()),
                             key=lambda m: len(m[0]), reverse=True)
        self.files = dict(files or {})

    def local(self, path: str) -> str:
        if path in self.files:
            return self.files[path]
        for mount, local in self.mounts:
            if path == mount or path.startswith(mount + "/"):
                return local + path[len(mount):]
        return path

    def rewrite(self, text: str) -> str:
        """Rewrite absolute paths under a mount, and the mapped files, inside ``text`` (arguments like --out=/data/x).

        A path must end where the mount path or file name ends or at a separator: ``/data`` maps ``/data/x`` but
        not ``/database``. Where the mount path also exists on this machine (``/tmp``, ``/work``), only paths that
        do not exist here are rewritten, so that the local programs and files a command names keep working; mapped
        files are always rewritten (they are the container's own, whatever this machine has at that path).
        """
        if not self.mounts and not self.files:
            return text
        paths = sorted([*self.files, *(m for m, _ in self.mounts)], key=len, reverse=True)
        alternatives = "|".join(re.escape(p) for p in paths)
        pattern = re.compile(rf"(?<![\w./-])(?:{alternatives})(?:/[^\s:;,='\"]*)?(?![^\s:;,='\"])")
        return pattern.sub(lambda m: self._rewrite_path(m.group(0)), text)

    def _rewrite_path(self, path: str) -> str:
        if path in self.files:
            return self.files[path]
        for mount, local in self.mounts:
            if path == mount or path.startswith(mount + "/"):
                if os.path.exists(mount) and os.path.exists(path):
                    return path
                return local + path[len(mount):]
        return path
