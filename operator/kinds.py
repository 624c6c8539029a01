"""Per-kind adapters of the gang engine: which pods, which command, how success is judged.

Each adapter is small and declarative; everything else (placement, restarts, status) is shared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import dump_status
from .api import ActivationDump, InterpInferenceService, KindInfo, Resource, SAETrainingJob, kind_info
from .api.common import RestartPolicy, RunPolicy, SchedulingSpec, StorageRef, WorkerSpec
from .conditions import set_condition
from .gang import naming
from .gang.builders import Mount
from .gang.lifecycle import Policy
from .gang.placement import GangRequest
from .quantity import parse_resources

if TYPE_CHECKING:
    from .reconciler import Snapshot

DUMP_STATUS_PORT = 9400


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

    def sizes(self, obj: Any) -> tuple[int, int, int]:
        """(min, preferred, max) pods."""
        raise NotImplementedError

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
        return GangRequest(
            per_pod=per_pod,
            min_size=low,
            max_size=high,
            node_selector=worker.node_selector,
            tolerations=[t.to_json_dict() for t in worker.tolerations],
            topology_keys=tuple(topology.keys) if topology else (),
            topology_mode=topology.mode if topology else "Required",
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


def _mount(role: str, storage: StorageRef | None, writes: bool = False) -> tuple[Mount, ...]:
    if storage is None:
        return ()
    return (Mount(role, storage, read_only=storage.read_only and not writes),)


class SAETrainingJobAdapter(Adapter):
    def sizes(self, obj: SAETrainingJob) -> tuple[int, int, int]:
        gang = obj.spec.gang
        return gang.min_replicas or gang.replicas, gang.replicas, gang.max_replicas or gang.replicas

    def worker(self, obj: SAETrainingJob) -> WorkerSpec:
        return obj.spec.gang

    def mounts(self, obj: SAETrainingJob) -> tuple[Mount, ...]:
        spec = obj.spec
        dataset = spec.data.on_the_fly.dataset.source if spec.data.on_the_fly else None
        return (*_mount("model", spec.model.storage), *_mount("dataset", dataset),
                *_mount("output", spec.output, writes=True))


class ActivationDumpAdapter(Adapter):
    def sizes(self, obj: ActivationDump) -> tuple[int, int, int]:
        return obj.spec.parallelism, obj.spec.parallelism, obj.spec.parallelism

    def policy(self, obj: ActivationDump) -> Policy:
        # Exit code 0 is not enough: the store counts only once rank 0 says its manifest verified.
        return dataclasses.replace(super().policy(obj), verify_success=dump_status.verify_store)

    def present_status(self, obj: ActivationDump, status: dict[str, Any], snapshot: Snapshot) -> dict[str, Any]:
        """Shards, bytes and token progress from the ranks' reports; the manifest and summary once succeeded."""
        status = super().present_status(obj, status, snapshot)
        current = [p for p in snapshot.pods if p.attempt == status.get("attempt")]
        phase = status.get("phase")
        if phase == "Succeeded":
            result, _ = dump_status.read_result(current)
            return dump_status.apply_result(status, result, obj.spec.output) if result else status
        if phase == "Failed":
            return status
        running = {p.name for p in current if p.phase == "Running" and not p.deleting}
        return dump_status.apply_progress(status, snapshot.reports, running, snapshot.now)

    def mounts(self, obj: ActivationDump) -> tuple[Mount, ...]:
        spec = obj.spec
        return (*_mount("model", spec.model.storage), *_mount("dataset", spec.dataset.source),
                *_mount("output", spec.output, writes=True))


class InterpInferenceServiceAdapter(Adapter):
    def sizes(self, obj: InterpInferenceService) -> tuple[int, int, int]:
        return obj.spec.replicas, obj.spec.replicas, obj.spec.replicas

    def restart(self, obj: InterpInferenceService) -> RestartPolicy:
        # Replicas are independent servers: a failed one is replaced alone, and a server never exhausts its retries.
        return RestartPolicy(scope="Pod", backoff_limit=1000, backoff_base_seconds=1, backoff_max_seconds=60,
                             permanent_exit_codes=[2, 3])

    def run(self, obj: InterpInferenceService) -> RunPolicy:
        return RunPolicy()

    def ports(self, obj: InterpInferenceService) -> tuple[int, ...]:
        return (obj.spec.port,)

    def present_status(self, obj: InterpInferenceService, status: dict[str, Any],
                       snapshot: Snapshot) -> dict[str, Any]:
        """Services are Ready, Progressing or Degraded rather than Running or Restarting."""
        status = super().present_status(obj, status, snapshot)
        spec, meta = obj.spec, obj.metadata
        ready, wanted = status.get("readyReplicas", 0), spec.replicas
        phase = status.get("phase", "Pending")
        if wanted == 0:
            phase, reason, message = "Suspended", "ScaledToZero", "spec.replicas is 0"
        elif phase == "Running" and ready >= wanted:
            phase, reason, message = "Ready", "AllReplicasReady", f"{ready} of {wanted} replicas ready"
        elif phase in ("Running", "Pending") and status.get("attempt", 0) > 0:
            phase, reason, message = "Progressing", "ReplicasStarting", f"{ready} of {wanted} replicas ready"
        elif phase == "Restarting":
            phase, reason, message = "Degraded", "ReplicaFailed", f"{ready} of {wanted} replicas ready"
        else:
            reason, message = phase, f"{ready} of {wanted} replicas ready"
        status["phase"] = phase
        status["conditions"] = set_condition(
            status.get("conditions", []), "Ready", "True" if phase == "Ready" else "False", reason, message,
            meta.get("generation"), snapshot.now,
        )
        status["selector"] = naming.label_selector(naming.selector_labels(self.info.kind, meta["name"]))
        status["url"] = f"http://{naming.service_name(meta['name'])}.{meta.get('namespace')}.svc:{spec.port}"
        return status

    def mounts(self, obj: InterpInferenceService) -> tuple[Mount, ...]:
        spec = obj.spec
        saes = [m for sae in spec.saes for m in _mount(f"saes/{sae.name}", sae.storage)]
        vectors = [m for vec in spec.steering_vectors for m in _mount(f"vectors/{vec.name}", vec.storage)]
        return (*_mount("model", spec.model.storage), *saes, *vectors)


ADAPTERS: dict[str, Adapter] = {
    "SAETrainingJob": SAETrainingJobAdapter(kind_info("SAETrainingJob"), "interp_workloads.train", True, True, True),
    "ActivationDump": ActivationDumpAdapter(kind_info("ActivationDump"), "interp_workloads.dump", True, True, True,
                                            status_port=DUMP_STATUS_PORT),
    "InterpInferenceService": InterpInferenceServiceAdapter(
        kind_info("InterpInferenceService"), "interp_workloads.serve", False, False, False
    ),
}
