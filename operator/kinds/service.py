"""InterpInferenceService: independent server replicas behind a Service, Ready rather than Running."""

from __future__ import annotations

from typing import Any

from ..api import InterpInferenceService, kind_info
from ..api.common import RestartPolicy, RunPolicy
from ..conditions import set_condition
from ..gang import naming
from ..gang.builders import Mount
from ..snapshot import Snapshot
from .base import Adapter, mount


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
        saes = [m for sae in spec.saes for m in mount(f"saes/{sae.name}", sae.storage)]
        vectors = [m for vec in spec.steering_vectors for m in mount(f"vectors/{vec.name}", vec.storage)]
        return (*mount("model", spec.model.storage), *saes, *vectors)


def adapter() -> InterpInferenceServiceAdapter:
    return InterpInferenceServiceAdapter(kind_info("InterpInferenceService"), "interp_workloads.serve", False, False,
                                         False)
