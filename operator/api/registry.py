"""The three kinds and how they appear in the API: names, short names, printer columns, subresources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .activationdump import ActivationDump
from .base import Resource
from .inferenceservice import InterpInferenceService
from .saetrainingjob import SAETrainingJob

GROUP = "interp.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "interp"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class KindInfo:
    model: type[Resource]
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    scale: dict[str, str] | None = None
    categories: tuple[str, ...] = field(default=(CATEGORY,))

    @property
    def kind(self) -> str:
        return str(self.model.model_fields["kind"].default)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    def parse(self, body: dict[str, Any]) -> Resource:
        """Validate a whole object (apiVersion, kind, metadata, spec, status) with the kind's model."""
        return self.model.model_validate(body)


_PHASE = PrinterColumn("Phase", ".status.phase", description="Lifecycle phase")
_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")
_PROGRESS = PrinterColumn("Progress", ".status.progress.percent", type="number", description="Percent done")
_STAGE = PrinterColumn("Stage", ".status.stage", description="Stage of the least advanced rank")
_RESTARTS = PrinterColumn("Restarts", ".status.restarts", type="integer", description="Restarts so far")

KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        model=SAETrainingJob,
        plural="saetrainingjobs",
        singular="saetrainingjob",
        short_names=("saejob",),
        printer_columns=(
            _PHASE,
            _PROGRESS,
            PrinterColumn("World", ".status.worldSize", type="integer", description="torch.distributed world size"),
            _RESTARTS,
            _STAGE,
            # A string, not a date: kubectl renders a future date as <invalid>.
            PrinterColumn("ETA", ".status.progress.eta", priority=1),
            PrinterColumn("Checkpoint", ".status.lastCheckpoint.step", type="integer", priority=1),
            _AGE,
        ),
    ),
    KindInfo(
        model=ActivationDump,
        plural="activationdumps",
        singular="activationdump",
        short_names=("actdump",),
        printer_columns=(
            _PHASE,
            _PROGRESS,
            _STAGE,
            PrinterColumn("Shards", ".status.shardsDone", type="integer", description="Shards written"),
            _RESTARTS,
            PrinterColumn("Manifest", ".status.manifest", priority=1),
            _AGE,
        ),
    ),
    KindInfo(
        model=InterpInferenceService,
        plural="interpinferenceservices",
        singular="interpinferenceservice",
        short_names=("iis",),
        printer_columns=(
            _PHASE,
            PrinterColumn("Ready", ".status.readyReplicas", type="integer", description="Ready replicas"),
            PrinterColumn("Replicas", ".spec.replicas", type="integer", description="Desired replicas"),
            PrinterColumn("URL", ".status.url", priority=1),
            _AGE,
        ),
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    ),
)

BY_KIND: dict[str, KindInfo] = {info.kind: info for info in KINDS}
BY_PLURAL: dict[str, KindInfo] = {info.plural: info for info in KINDS}


def kind_info(kind: str) -> KindInfo:
    try:
        return BY_KIND[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(BY_KIND)}") from None
