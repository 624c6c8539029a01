"""Node configuration and the Node objects that represent this machine's simulated nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import meta

Obj = dict[str, Any]
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


@dataclass
class NodeConfig:
    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)

    def node_object(self) -> Obj:
        allocatable = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods),
                       "ephemeral-storage": "100Gi"}
        if self.gpus:
            allocatable["nvidia.com/gpu"] = str(self.gpus)
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  **self.labels}
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": list(self.taints)} if self.taints else {},
            "status": {
                "capacity": dict(allocatable), "allocatable": allocatable,
                "conditions": [ready_condition(True)],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-interp-local", "containerRuntimeVersion": "process://local",
                             "operatingSystem": "linux", "architecture": "amd64"},
            },
        }


def ready_condition(ready: bool, reason: str = "") -> Obj:
    now = meta.now()
    return {"type": "Ready", "status": "True" if ready else "Unknown",
            "reason": reason or ("KubeletReady" if ready else "NodeStatusUnknown"),
            "message": "kubelet is posting ready status" if ready else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": now, "lastTransitionTime": now}


def is_ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def parse_node_spec(text: str, index: int) -> NodeConfig:
    """``name:cpu=8,memory=32Gi,gpu=2,zone=a,rack=r1,label.k=v,taint=k=v:NoSchedule``; everything optional."""
    name, _, rest = text.partition(":")
    config = NodeConfig(name=name or f"node-{index}")
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key == "cpu":
            config.cpu = value
        elif key == "memory":
            config.memory = value
        elif key == "gpu":
            config.gpus = int(value)
        elif key == "pods":
            config.pods = int(value)
        elif key == "zone":
            config.labels["topology.kubernetes.io/zone"] = value
        elif key == "rack":
            config.labels["topology.kubernetes.io/rack"] = value
        elif key == "clique":
            config.labels["nvidia.com/gpu.clique"] = value
        elif key.startswith("label."):
            config.labels[key[len("label."):]] = value
        elif key == "taint":
            taint_key, _, effect = value.rpartition(":")
            tkey, _, tvalue = taint_key.partition("=")
            config.taints.append({"key": tkey, "value": tvalue, "effect": effect} if tvalue
                                 else {"key": tkey, "effect": effect})
        else:
            raise ValueError(f"unknown node attribute {key!r} in {text!r}")
    return config
