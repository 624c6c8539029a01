"""SAETrainingJob: a torch.distributed gang that trains the job's SAEs and exports them to spec.output."""

from __future__ import annotations

from ..api import SAETrainingJob, kind_info
from ..api.common import WorkerSpec
from ..gang.builders import Mount
from .base import Adapter, mount


class SAETrainingJobAdapter(Adapter):
    def sizes(self, obj: SAETrainingJob) -> tuple[int, int, int]:
        gang = obj.spec.gang
        return gang.min_replicas or gang.replicas, gang.replicas, gang.max_replicas or gang.replicas

    def worker(self, obj: SAETrainingJob) -> WorkerSpec:
        return obj.spec.gang

    def mounts(self, obj: SAETrainingJob) -> tuple[Mount, ...]:
        spec = obj.spec
        dataset = spec.data.on_the_fly.dataset.source if spec.data.on_the_fly else None
        return (*mount("model", spec.model.storage), *mount("dataset", dataset),
                *mount("output", spec.output, writes=True))


def adapter() -> SAETrainingJobAdapter:
    return SAETrainingJobAdapter(kind_info("SAETrainingJob"), "interp_workloads.train", True, True, True)
