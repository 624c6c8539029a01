"""InterpInferenceService: independent server replicas behind a Service, Ready rather than Running.

Replicas are not a gang: each is one pod, placed by the cluster's scheduler like a Deployment's, replaced alone when
it fails, and rolled pod by pod when the spec changes (:mod:`..gang.rollout`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..api import InterpInferenceService, kind_info
from ..api.common import RestartPolicy, RunPolicy
from ..conditions import set_condition
from ..gang import naming
from ..gang.builders import Mount, SecretFile
from ..gang.lifecycle import Policy
from ..gang.rollout import Rollout
from ..snapshot import Snapshot
from .base import Adapter, mount

TOKENS_ENV = "INTERP_AUTH_TOKENS_FILE"
"""Where the server finds its bearer tokens (read by ``interp_workloads.serve.config``)."""
REVISION_EXCLUDES = ("replicas", "rollout")
"""Spec fields that do not shape a pod: changing them scales or re-paces, never replaces, replicas."""


def revision(obj: InterpInferenceService) -> str:
    """A hash of everything in the spec that shapes a server pod."""
    shaping = {k: v for k, v in obj.spec.to_json_dict().items() if k not in REVISION_EXCLUDES}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]


class InterpInferenceServiceAdapter(Adapter):
    def sizes(self, obj: InterpInferenceService) -> tuple[int, int, int]:
        return obj.spec.replicas, obj.spec.replicas, obj.spec.replicas

    def restart(self, obj: InterpInferenceService) -> RestartPolicy:
        # Replicas are independent servers: a failed one is replaced alone, and a server never exhausts its retries;
        # a model, SAE or vector that cannot load (exit code 3) is final until the spec changes.
        return RestartPolicy(scope="Pod", backoff_limit=1000, backoff_base_seconds=1, backoff_max_seconds=60,
                             permanent_exit_codes=[2, 3])

    def run(self, obj: InterpInferenceService) -> RunPolicy:
        return RunPolicy()

    def ports(self, obj: InterpInferenceService) -> tuple[int, ...]:
        return (obj.spec.port,)

    def policy(self, obj: InterpInferenceService) -> Policy:
        rollout = obj.spec.rollout
        return dataclasses.replace(
            super().policy(obj), builtin_scheduler=False,
            rollout=Rollout.resolve(revision(obj), obj.spec.replicas, rollout.max_surge, rollout.max_unavailable))

    def secret_files(self, obj: InterpInferenceService) -> tuple[SecretFile, ...]:
        auth = obj.spec.auth
        if auth.disabled or auth.secret_name is None:
            return ()
        return (SecretFile("auth", auth.secret_name, auth.key, TOKENS_ENV),)

    def present_status(self, obj: InterpInferenceService, status: dict[str, Any],
                       snapshot: Snapshot) -> dict[str, Any]:
        """Services are Ready, Progressing, Degraded, Suspended (0 replicas) or Failed, not Running or Restarting."""
        status = super().present_status(obj, status, snapshot)
        spec, meta = obj.spec, obj.metadata
        ready, wanted = status.get("readyReplicas", 0), spec.replicas
        updated, present = status.get("updatedReplicas", 0), status.get("replicas", 0)
        counts = f"{ready} of {wanted} replicas ready, {updated} updated"
        conditions: dict[str, dict[str, Any]] = {c["type"]: c for c in status.get("conditions", [])}
        failed, restarting = conditions.get("Failed", {}), conditions.get("Restarting", {})
        if status.get("phase") == "Failed":
            phase, reason, message = "Failed", failed.get("reason", "Failed"), failed.get("message", "")
        elif wanted == 0 and present == 0:
            phase, reason, message = "Suspended", "ScaledToZero", "spec.replicas is 0"
        elif ready >= wanted and updated == wanted == present:
            phase, reason, message = "Ready", "AllReplicasReady", counts
        elif restarting.get("status") == "True":
            phase, reason, message = "Degraded", "ReplicaFailed", f"{counts}; {restarting.get('message', '')}"
        elif status.get("attempt", 0) > 0:
            phase, reason, message = "Progressing", "ReplicasUpdating" if present > updated else "ReplicasStarting", \
                counts
        else:
            phase, reason, message = "Pending", "Pending", counts
        status["phase"] = phase
        status["conditions"] = set_condition(
            status.get("conditions", []), "Ready", "True" if phase == "Ready" else "False", reason, message,
            meta.get("generation"), snapshot.now,
        )
        nodes = sorted({p.node for p in snapshot.pods if p.node and not p.finished and not p.deleting})
        if nodes:
            status["placement"] = {"nodes": nodes}
        else:
            status.pop("placement", None)
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
                                         False, readiness_path="/readyz", liveness_path="/healthz")
