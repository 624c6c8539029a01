"""The "restricted" Pod Security Standard as a pure check over pod templates, for tests.

Written from the rules in the Kubernetes Pod Security Standards (restricted includes every baseline rule), so
any test can assert that a rendered chart or a pod the operator builds would be admitted to a namespace
labelled ``pod-security.kubernetes.io/enforce: restricted``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                        "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
                "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """Every rule of the restricted Pod Security Standard (baseline included) that a pod template breaks."""
    spec, annotations = template["spec"], template.get("metadata", {}).get("annotations", {})
    pod_sc = spec.get("securityContext", {})
    containers = [*spec.get("initContainers", []), *spec.get("containers", []),
                  *spec.get("ephemeralContainers", [])]
    bad = [f"spec.{field}" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    bad += [f"volume {v['name']}: type {t}" for v in spec.get("volumes", [])
            for t in set(v) - {"name"} - ALLOWED_VOLUME_TYPES]
    bad += [f"sysctl {s['name']}" for s in pod_sc.get("sysctls", []) if s["name"] not in SAFE_SYSCTLS]
    bad += [f"annotation {k}" for k, v in annotations.items()
            if k.startswith("container.apparmor.security.beta.kubernetes.io/")
            and not (v == "runtime/default" or v.startswith("localhost/"))]
    if pod_sc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")

    def context_violations(where: str, sc: dict[str, Any]) -> list[str]:
        found = []
        if sc.get("windowsOptions", {}).get("hostProcess"):
            found.append(f"{where}: hostProcess")
        selinux = sc.get("seLinuxOptions", {})
        if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: seLinuxOptions")
        if sc.get("appArmorProfile", {}).get("type", "RuntimeDefault") not in {"RuntimeDefault", "Localhost"}:
            found.append(f"{where}: appArmorProfile")
        return found

    bad += context_violations("pod", pod_sc)
    pod_seccomp = pod_sc.get("seccompProfile", {}).get("type")
    if pod_seccomp == "Unconfined":  # forbidden even when every container sets its own profile
        bad.append("pod seccompProfile Unconfined")
    for c in containers:
        where, sc = f"container {c['name']}", c.get("securityContext", {})
        bad += context_violations(where, sc)
        bad += [f"{where}: hostPort" for p in c.get("ports", []) if p.get("hostPort")]
        if sc.get("privileged"):
            bad.append(f"{where}: privileged")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{where}: procMount")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            bad.append(f"{where}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            bad.append(f"{where}: runAsUser 0")
        if sc.get("seccompProfile", {}).get("type", pod_seccomp) not in {"RuntimeDefault", "Localhost"}:
            bad.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            bad.append(f"{where}: capabilities must drop ALL")
        bad += [f"{where}: adds capability {cap}" for cap in capabilities.get("add", [])
                if cap != "NET_BIND_SERVICE"]
    return bad


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) for every object that creates pods."""
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Pod":
            yield name, obj
        elif obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield name, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield name, obj["spec"]["jobTemplate"]["spec"]["template"]


class PodTemplate:
    """A restricted-compliant pod template to break one rule at a time."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {"metadata": {}, "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "main", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "tmp", "emptyDir": {}}]}}

    def pod(self, **fields: Any) -> PodTemplate:
        self.body["spec"].update(fields)
        return self

    def pod_context(self, **fields: Any) -> PodTemplate:
        self.body["spec"]["securityContext"].update(fields)
        return self

    def container_context(self, **fields: Any) -> PodTemplate:
        self.body["spec"]["containers"][0]["securityContext"].update(fields)
        return self

    def without_pod_context(self, field: str) -> PodTemplate:
        del self.body["spec"]["securityContext"][field]
        return self

    def annotate(self, key: str, value: str) -> PodTemplate:
        self.body["metadata"]["annotations"] = {key: value}
        return self
