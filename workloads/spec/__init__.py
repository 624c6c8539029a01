"""Torch-free descriptions of models, captures, objectives and interventions (pydantic, JSON-serialisable)."""

from .interventions import (
    MAX_NORM,
    MAX_WIDTH,
    Ablation,
    AddVector,
    FeatureEdit,
    HookName,
    Intervention,
    Positions,
    PositionSlice,
    Projection,
    Replace,
    RowInterventions,
    SAESplice,
    intervention_adapter,
    row_interventions_adapter,
)
from .run import CaptureSpec, DType, ModelSpec, Objective

__all__ = [
    "MAX_NORM",
    "MAX_WIDTH",
    "Ablation",
    "AddVector",
    "CaptureSpec",
    "DType",
    "FeatureEdit",
    "HookName",
    "Intervention",
    "ModelSpec",
    "Objective",
    "PositionSlice",
    "Positions",
    "Projection",
    "Replace",
    "RowInterventions",
    "SAESplice",
    "intervention_adapter",
    "row_interventions_adapter",
]
