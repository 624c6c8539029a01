"""Serialisable descriptions of activation edits, shared by the Python API, the server API and the CRDs.

Torch-free on purpose: the operator embeds these models in its CRD schemas without installing torch (vectors may
still be torch tensors or numpy arrays in-process, see :mod:`.values`). Shapes
that depend on the model (a vector's width must equal the hook's width) are checked when the edit is applied;
everything that can be checked from the description alone is checked here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_serializer,
    field_validator,
    model_validator,
)

from .values import MAX_NORM, MAX_WIDTH, Matrix, Vector, norm, norms

# Caps keep one request from pushing activations to values that overflow bf16 or from shipping huge payloads.
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


_POSITIONS_FORMS = ("'all', 'last', a slice ({'start': i, 'stop': j}, PositionSlice(start=i, stop=j) or slice(i, j)) "
                    "or a list of token indices")


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positions_form(value: object) -> object:
    """Bring every accepted Python form to its JSON form, and say in one line what is accepted otherwise."""
    if isinstance(value, str):
        if value not in ("all", "last"):
            raise ValueError(f"must be {_POSITIONS_FORMS}; got {value!r}")
        return value
    if isinstance(value, slice):
        if value.step not in (None, 1):
            raise ValueError(f"a slice of positions takes step 1 (or none), got step {value.step}")
        value = {"start": value.start, "stop": value.stop}
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"start", "stop"})
        if unknown or not all(v is None or _is_index(v) for v in value.values()):
            raise ValueError(f"a slice of positions has integer (or null) 'start' and 'stop' only; got {value!r}")
        return value
    if isinstance(value, PositionSlice):
        return value
    if isinstance(value, list | tuple | range):
        items = list(value)
        if not 1 <= len(items) <= MAX_POSITIONS:
            raise ValueError(f"explicit positions must list at least one index and at most {MAX_POSITIONS}; "
                             f"got {len(items)}")
        if not all(_is_index(p) for p in items):
            raise ValueError(f"explicit positions must be integers; got {items[:8]!r}")
        return items
    raise ValueError(f"must be {_POSITIONS_FORMS}; got {type(value).__name__}")


# "all": every position; "last": each row's last non-padding token; a slice or explicit indices of the padded sequence.
Positions = Annotated[
    Literal["all", "last"] | PositionSlice | Annotated[list[int], Field(min_length=1, max_length=MAX_POSITIONS)],
    BeforeValidator(_positions_form),
]

positions_adapter: TypeAdapter[Positions] = TypeAdapter(Positions)


def _check_vector(values: Any, what: str, *, nonzero: bool = False) -> Any:
    if not 1 <= len(values) <= MAX_WIDTH:
        raise ValueError(f"{what} must have between 1 and {MAX_WIDTH} values, got {len(values)}")
    if nonzero and norm(values) == 0.0:
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
    vector: Vector
    scale: float = 1.0

    @field_validator("vector")
    @classmethod
    def _vector(cls, value: Any) -> Any:
        return _check_vector(value, "vector")

    @model_validator(mode="after")
    def _norm_cap(self) -> AddVector:
        size = abs(self.scale) * norm(self.vector)
        if size > MAX_NORM:
            raise ValueError(f"|scale| * ||vector|| = {size:.4g} exceeds the cap {MAX_NORM:g}")
        return self


class Projection(_Edit):
    """Edit the component along a direction (normalised to unit length before use).

    ``set``: the component becomes ``value``; ``scale``: it is multiplied by ``value``; ``zero``: it is removed.
    """

    kind: Literal["projection"] = "projection"
    direction: Vector
    mode: Literal["set", "scale", "zero"]
    value: CappedFloat = 0.0

    @field_validator("direction")
    @classmethod
    def _direction(cls, value: Any) -> Any:
        return _check_vector(value, "direction", nonzero=True)


class Ablation(_Edit):
    """Replace the activation by zeros, or by a given mean activation (typically a dataset mean)."""

    kind: Literal["ablate"] = "ablate"
    mode: Literal["zero", "mean"]
    mean: Vector | None = None

    @model_validator(mode="after")
    def _mean_matches_mode(self) -> Ablation:
        if self.mode == "mean":
            if self.mean is None:
                raise ValueError("mode 'mean' needs the mean activation in 'mean'")
            _check_vector(self.mean, "mean")
            if norm(self.mean) > MAX_NORM:
                raise ValueError(f"||mean|| exceeds the cap {MAX_NORM:g}")
        elif self.mean is not None:
            raise ValueError("'mean' is only allowed with mode 'mean'")
        return self


class Replace(_Edit):
    """Overwrite the activation: one row of ``values`` per selected position, or one row for all of them."""

    kind: Literal["replace"] = "replace"
    values: Annotated[Matrix, Field(min_length=1, max_length=MAX_POSITIONS)]

    @field_validator("values")
    @classmethod
    def _rectangular(cls, value: Any) -> Any:
        if isinstance(value, list):
            width = len(value[0])
            for row in value:
                _check_vector(row, "each row of values")
                if len(row) != width:
                    raise ValueError(f"values must be rectangular: rows of width {width} and {len(row)}")
        if max(norms(value)) > MAX_NORM:
            raise ValueError(f"a row of values has a norm above the cap {MAX_NORM:g}")
        return value


class FeatureEdit(_Strict):
    """``clamp``: set the latent to ``value``; ``scale``: multiply it by ``value``; ``zero``: set it to 0."""

    feature: Annotated[int, Field(ge=0, le=1 << 26)]
    op: Literal["clamp", "scale", "zero"]
    value: CappedFloat = 0.0


class SAESplice(_Edit):
    """Encode with a named SAE, edit latents, decode.

    ``keep_error`` (default): the result is ``x + decode(edited) - decode(latents)``, so the SAE's reconstruction
    error is kept and with no edits it is ``x`` bit for bit. Without it the reconstruction ``decode(edited)``
    replaces the activation (what CE-loss-recovered metrics measure).
    """

    kind: Literal["sae"] = "sae"
    sae: Annotated[str, Field(min_length=1, max_length=256)]
    edits: Annotated[list[FeatureEdit], Field(max_length=4096)] = []
    keep_error: bool = True


class FunctionEdit(_Edit):
    """In-process escape hatch: ``fn(activation) -> activation`` of the same shape, at the selected positions.

    ``fn`` receives ``[rows, positions, width]`` (the rows it applies to; a batch-wide edit at every position sees
    the whole ``[batch, seq, width]`` activation) in the activation's dtype, and may use autograd. It holds a Python
    callable, so it has no JSON form: serialising it raises, and the server's request models refuse it.
    """

    kind: Literal["function"] = "function"
    fn: Callable[[Any], Any]

    @field_serializer("fn")
    def _not_serialisable(self, fn: Callable[[Any], Any]) -> None:
        raise TypeError(f"FunctionEdit at {self.hook!r} holds a Python callable ({getattr(fn, '__name__', fn)!r}) "
                        "and cannot be serialised; send a declarative intervention (add, projection, ablate, "
                        "replace, sae) to a server")


Intervention = Annotated[
    AddVector | Projection | Ablation | Replace | SAESplice, Field(discriminator="kind")
]

# One list of interventions per batch row (applied in list order at each hook).
RowInterventions = Annotated[list[Intervention], Field(max_length=256)]

# What the in-process Python API accepts besides the serialisable set.
LocalIntervention = Intervention | FunctionEdit

intervention_adapter: TypeAdapter[Intervention] = TypeAdapter(Intervention)
row_interventions_adapter: TypeAdapter[list[Intervention]] = TypeAdapter(RowInterventions)
