"""The adapter base of the gang engine: which pods, which command, how success is judged, for one kind.

Each kind's adapter (and its status presentation) lives in its own module beside this one; everything else
(placement, restarts, status) is shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api import KindInfo, Resource
from ..api.common import RestartPolicy, RunPolicy, SchedulingSpec, StorageRef, WorkerSpec
from ..gang.builders import Mount, SecretFile
from ..gang.lifecycle import Policy
from ..gang.placement import GangRequest
from ..quantity import parse_resources
from ..snapshot import Snapshot


@dataclass(frozen=True)
class Hold:
    """Why an object must not start its first gang yet (it waits on another object): its condition says so."""

    condition: str
    reason: str
    message: str
    retry_s: float = 5.0


@dataclass(frozen=True)
class Adapter:
    info: KindInfo
    module: str
    """Workload module the pods run (`python -m <module> --config ...`)."""
    completes: bool
    distributed: bool
    headless_service: bool
    status_port: int | None = None
    """Port of the pods' progress endpoint (``GET /progress``), which the operator polls; None: not served."""
    progress_interval_s: float = 10.0
    """While the object runs, its status is refreshed from the pods at least this often."""
    readiness_path: str | None = None
    """HTTP path of the readiness probe on the first of ``ports``; None: no probe."""
    liveness_path: str | None = None
    """HTTP path of the liveness probe on the first of ``ports``; None: no probe."""

    def sizes(self, obj: Any) -> tuple[int, int, int]:
        """(min, preferred, max) pods."""
        raise NotImplementedError

    def references(self, body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """(kind, name) of the objects in the same namespace this one depends on; the operator puts what it knows of
        them in ``Snapshot.related``."""
        return ()

    def prepare(self, obj: Any, snapshot: Snapshot) -> Any:
        """``obj`` completed from the objects it references (``snapshot.related``), or a :class:`Hold` while they
        are not ready; the first gang starts only once this returns an object."""
        return obj

    def worker(self, obj: Any) -> WorkerSpec:
        return obj.spec.worker  # type: ignore[no-any-return]

    def restart(self, obj: Any) -> RestartPolicy:
        return obj.spec.restart_policy  # type: ignore[no-any-return]

    def run(self, obj: Any) -> RunPolicy:
        return obj.spec.run_policy  # type: ignore[no-any-return]

    def scheduling(self, obj: Any) -> SchedulingSpec:
        return obj.spec.scheduling  # type: ignore[no-any-return]

    def mounts(self, obj: Any) -> tuple[Mount, ...]:
        raise NotImplementedError

    def ports(self, obj: Any) -> tuple[int, ...]:
        return ()

    def secret_files(self, obj: Any) -> tuple[SecretFile, ...]:
        """Keys of Secrets the workload reads as files (an inference service's bearer tokens)."""
        return ()

    def policy(self, obj: Any) -> Policy:
        low, size, high = self.sizes(obj)
        return Policy(
            completes=self.completes,
            size=size,
            min_size=low,
            max_size=high,
            processes_per_pod=self.worker(obj).processes_per_pod,
            restart=self.restart(obj),
            run=self.run(obj),
            builtin_scheduler=self.scheduling(obj).gang_scheduler == "builtin",
        )

    def gang_request(self, obj: Any) -> GangRequest:
        worker, scheduling = self.worker(obj), self.scheduling(obj)
        low, _, high = self.sizes(obj)
        # The scheduler reserves requests; a limit-only resource (GPUs, typically) is requested at its limit.
        per_pod = parse_resources(worker.resources.limits) | parse_resources(worker.resources.requests)
        topology = scheduling.topology
        node_affinity = worker.affinity.node_affinity if worker.affinity else None
        required = node_affinity.required_during_scheduling_ignored_during_execution if node_affinity else None
        return GangRequest(
            per_pod=per_pod,
            min_size=low,
            max_size=high,
            node_selector=worker.node_selector,
            tolerations=[t.to_json_dict() for t in worker.tolerations],
            topology_keys=tuple(topology.keys) if topology else (),
            topology_mode=topology.mode if topology else "Required",
            node_affinity_terms=[t.to_json_dict() for t in required.node_selector_terms] if required else (),
        )

    def present_status(self, obj: Any, status: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
        """The lifecycle's status in this kind's status schema (fields it does not have are left out), completed
        from what the pods say (``snapshot``: their states, progress reports, termination messages)."""
        model = self.info.model.model_fields["status"].annotation
        status_model = next(a for a in model.__args__ if a is not type(None))  # type: ignore[union-attr]
        known = {f.alias or name for name, f in status_model.model_fields.items()}
        return {k: v for k, v in status.items() if k in known}

    def config(self, obj: Resource, size: int, attempt: int) -> dict[str, Any]:
        """The workload's config file: the validated spec, where each storage is mounted, and the gang's shape."""
        meta = obj.metadata
        return {
            "kind": self.info.kind,
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "spec": obj.spec.to_json_dict(),  # type: ignore[attr-defined]
            "paths": {m.role: m.path for m in self.mounts(obj) if m.storage.claim_name},
            "gang": {"size": size, "attempt": attempt,
                     "processesPerPod": self.worker(obj).processes_per_pod},
        }


def mount(role: str, storage: StorageRef | None, writes: bool = False) -> tuple[Mount, ...]:
    if storage is None:
        return ()
    return (Mount(role, storage, read_only=storage.read_only and not writes),)
