"""Serialisable descriptions of activation edits, shared by the Python API, the server API and the CRDs.

Torch-free on purpose: the operator embeds these models in its CRD schemas without installing torch. Shapes
that depend on the model (a vector's width must equal the hook's width) are checked when the edit is applied;
everything that can be checked from the description alone is checked here.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

# Caps keep one request from pushing activations to values that overflow bf16 or from shipping huge payloads.
MAX_WIDTH = 65_536
MAX_NORM = 1.0e4
MAX_POSITIONS = 65_536

HookName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _capped(value: float) -> float:
    if abs(value) > MAX_NORM:
        raise ValueError(f"value {value:g} exceeds the cap {MAX_NORM:g}")
    return value


CappedFloat = Annotated[float, AfterValidator(_capped)]
"""A scalar edit value, bounded like vector norms so one request cannot blow up the activations."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PositionSlice(_Strict):
    """Python slice semantics over the (padded) sequence; negative indices count from its end."""

    start: int | None = None
    stop: int | None = None


# "all": every position; "last": each row's last non-padding token; a slice or explicit indices of the padded sequence.
Positions = Literal["all", "last"] | PositionSlice | Annotated[
    list[int], Field(min_length=1, max_length=MAX_POSITIONS)
]


def _norm(values: list[float]) -> float:
    return math.sqrt(math.fsum(v * v for v in values))


def _check_vector(values: list[float], what: str, *, nonzero: bool = False) -> list[float]:
    if not 1 <= len(values) <= MAX_WIDTH:
        raise ValueError(f"{what} must have between 1 and {MAX_WIDTH} values, got {len(values)}")
    if nonzero and _norm(values) == 0.0:
        raise ValueError(f"{what} must not be the zero vector")
    return values


class _Edit(_Strict):
    hook: HookName
    positions: Positions = "all"

    @field_validator("positions")
    @classmethod
    def _unique_positions(cls, value: Positions) -> Positions:
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("explicit positions must not repeat")
        return value


class AddVector(_Edit):
    """Add ``scale * vector`` (a steering vector) at the chosen positions."""

    kind: Literal["add"] = "add"
    vector: list[float]
    scale: float = 1.0

    @field_validator("vector")
    @classmethod
    def _vector(cls, value: list[float]) -> list[float]:
        return _check_vector(value, "vector")

    @model_validator(mode="after")
    def _norm_cap(self) -> AddVector:
        norm = abs(self.scale) * _norm(self.vector)
        if norm > MAX_NORM:
            raise ValueError(f"|scale| * ||vector|| = {norm:.4g} exceeds the cap {MAX_NORM:g}")
        return self


class Projection(_Edit):
    """Edit the component along a direction (normalised to unit length before use).

    ``set``: the component becomes ``value``; ``scale``: it is multiplied by ``value``; ``zero``: it is removed.
    """

    kind: Literal["projection"] = "projection"
    direction: list[float]
    mode: Literal["set", "scale", "zero"]
    value: CappedFloat = 0.0

    @field_validator("direction")
    @classmethod
    def _direction(cls, value: list[float]) -> list[float]:
        return _check_vector(value, "direction", nonzero=True)


class Ablation(_Edit):
    """Replace the activation by zeros, or by a given mean activation (typically a dataset mean)."""

    kind: Literal["ablate"] = "ablate"
    mode: Literal["zero", "mean"]
    mean: list[float] | None = None

    @model_validator(mode="after")
    def _mean_matches_mode(self) -> Ablation:
        if self.mode == "mean":
            if self.mean is None:
                raise ValueError("mode 'mean' needs the mean activation in 'mean'")
            _check_vector(self.mean, "mean")
            if _norm(self.mean) > MAX_NORM:
                raise ValueError(f"||mean|| exceeds the cap {MAX_NORM:g}")
        elif self.mean is not None:
            raise ValueError("'mean' is only allowed with mode 'mean'")
        return self


class Replace(_Edit):
    """Overwrite the activation: one row of ``values`` per selected position, or one row for all of them."""

    kind: Literal["replace"] = "replace"
    values: Annotated[list[list[float]], Field(min_length=1, max_length=MAX_POSITIONS)]

    @field_validator("values")
    @classmethod
    def _rectangular(cls, value: list[list[float]]) -> list[list[float]]:
        width = len(value[0])
        for row in value:
            _check_vector(row, "each row of values")
            if len(row) != width:
                raise ValueError(f"values must be rectangular: rows of width {width} and {len(row)}")
            if _norm(row) > MAX_NORM:
                raise ValueError(f"a row of values has a norm above the cap {MAX_NORM:g}")
        return value


class FeatureEdit(_Strict):
    """``clamp``: set the latent to ``value``; ``scale``: multiply it by ``value``; ``zero``: set it to 0."""

    feature: Annotated[int, Field(ge=0, le=1 << 26)]
    op: Literal["clamp", "scale", "zero"]
    value: CappedFloat = 0.0


class SAESplice(_Edit):
    """Encode with a named SAE, edit latents, decode, and keep the SAE's reconstruction error.

    The result is ``x + decode(edited) - decode(latents)``: with no edits it is ``x`` bit for bit.
    """

    kind: Literal["sae"] = "sae"
    sae: Annotated[str, Field(min_length=1, max_length=256)]
    edits: Annotated[list[FeatureEdit], Field(max_length=4096)] = []


Intervention = Annotated[
    AddVector | Projection | Ablation | Replace | SAESplice, Field(discriminator="kind")
]

# One list of interventions per batch row (applied in list order at each hook).
RowInterventions = Annotated[list[Intervention], Field(max_length=256)]

intervention_adapter: TypeAdapter[Intervention] = TypeAdapter(Intervention)
row_interventions_adapter: TypeAdapter[list[Intervention]] = TypeAdapter(RowInterventions)
