"""Torch-free descriptions of models, captures, objectives and interventions (pydantic, JSON-serialisable)."""

from .interventions import (
    MAX_NORM,
    MAX_WIDTH,
    Ablation,
    AddVector,
    FeatureEdit,
    FunctionEdit,
    HookName,
    Intervention,
    LocalIntervention,
    Positions,
    PositionSlice,
    Projection,
    Replace,
    RowInterventions,
    SAESplice,
    intervention_adapter,
    positions_adapter,
    row_interventions_adapter,
)
from .run import CaptureSpec, DType, ModelSpec, Objective
from .sae import SAEConfig
from .values import Matrix, Vector

__all__ = [
    "MAX_NORM",
    "MAX_WIDTH",
    "Ablation",
    "AddVector",
    "CaptureSpec",
    "DType",
    "FeatureEdit",
    "FunctionEdit",
    "HookName",
    "Intervention",
    "LocalIntervention",
    "Matrix",
    "ModelSpec",
    "Objective",
    "PositionSlice",
    "Positions",
    "Projection",
    "Replace",
    "RowInterventions",
    "SAEConfig",
    "SAESplice",
    "Vector",
    "intervention_adapter",
    "positions_adapter",
    "row_interventions_adapter",
]
