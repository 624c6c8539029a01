"""Vector and matrix fields of the edit descriptions: JSON lists, or torch tensors / numpy arrays kept as they are.

Torch-free: an array is recognised by its type's module, and torch or numpy is imported only when one is passed
(then it is already imported). Arrays get the same checks as lists (shape, finite entries, norm caps), computed
by the array library instead of one Python float at a time; JSON serialisation writes them as lists.
"""

from __future__ import annotations

import importlib
import math
from typing import Annotated, Any

from pydantic import PlainSerializer, ValidatorFunctionWrapHandler, WrapValidator

MAX_WIDTH = 65_536
MAX_NORM = 1.0e4
MAX_ROWS = 65_536


def array_library(value: object) -> str | None:
    """"torch" or "numpy" when ``value`` is one of their arrays, else None."""
    if isinstance(value, list | tuple) or not hasattr(value, "shape"):
        return None
    root = type(value).__module__.split(".")[0]
    return root if root in ("torch", "numpy") else None


def norms(value: Any) -> list[float]:
    """Euclidean norm of each row (of the vector itself when it is 1-D).

    Non-finite entries make their row's norm non-finite. Tensors are reduced in float32 (a fast pass) and again in
    float64 only when that overflows: finite float32 squares cannot overflow float64.
    """
    library = array_library(value)
    if library == "torch":
        torch = importlib.import_module("torch")
        fast = torch.linalg.vector_norm(value, dim=-1, dtype=torch.promote_types(value.dtype, torch.float32))
        if not bool(torch.isfinite(fast).all()):
            fast = torch.linalg.vector_norm(value, dim=-1, dtype=torch.float64)
        return fast.reshape(-1).tolist()
    if library == "numpy":
        numpy = importlib.import_module("numpy")
        return numpy.linalg.norm(value.astype("float64"), axis=-1).reshape(-1).tolist()
    rows = value if value and isinstance(value[0], list) else [value]
    return [math.sqrt(math.fsum(v * v for v in row)) for row in rows]


def norm(value: Any) -> float:
    return norms(value)[0]


def _non_finite_in_list(value: object) -> tuple[int, int]:
    """(non-finite entries, entries) of a list of numbers or of rows of numbers; non-numbers are left to pydantic."""
    if not isinstance(value, list | tuple):
        return 0, 0
    bad = total = 0
    for item in value:
        for v in item if isinstance(item, list | tuple) else (item,):
            total += 1
            if isinstance(v, float) and not math.isfinite(v):
                bad += 1
    return bad, total


def _checked_array(value: Any, ndim: int) -> Any:
    library = array_library(value)
    if library == "torch":
        value = value.detach()
        numeric = value.dtype.is_floating_point or not (value.dtype.is_complex or str(value.dtype) == "torch.bool")
    else:
        numeric = value.dtype.kind in "fiu"
    if not numeric:
        raise ValueError(f"expected real numbers, got an array of dtype {value.dtype}")
    if ndim == 2 and value.ndim == 1:
        value = value[None]
    if value.ndim != ndim:
        want = "a 1-D vector" if ndim == 1 else "a 2-D array (one row per position) or a 1-D row"
        raise ValueError(f"expected {want}, got shape {list(value.shape)}")
    if ndim == 2 and not 1 <= value.shape[0] <= MAX_ROWS:
        raise ValueError(f"must have between 1 and {MAX_ROWS} rows, got {value.shape[0]}")
    if not 1 <= value.shape[-1] <= MAX_WIDTH:
        raise ValueError(f"must have between 1 and {MAX_WIDTH} values, got {value.shape[-1]}")
    # One pass over the data when everything is finite (the usual case); count the bad entries only otherwise.
    if not all(math.isfinite(n) for n in norms(value)):
        module = importlib.import_module(library or "numpy")
        non_finite = int((~module.isfinite(value)).sum())
        size = value.numel() if library == "torch" else value.size
        if non_finite:
            raise ValueError(f"{non_finite} of {size} values are not finite (NaN or infinity)")
    return value


def _validator(ndim: int) -> WrapValidator:
    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if array_library(value) is not None:
            return _checked_array(value, ndim)
        if hasattr(value, "__array__") and not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of numbers, a torch tensor or a numpy array, got {type(value).__name__}")
        bad, total = _non_finite_in_list(value)
        if bad:
            raise ValueError(f"{bad} of {total} values are not finite (NaN or infinity)")
        return handler(value)

    return WrapValidator(validate)


def _as_json(value: Any) -> Any:
    return value.tolist() if array_library(value) is not None else value


Vector = Annotated[list[float], _validator(1), PlainSerializer(_as_json, return_type=list[float], when_used="json")]
"""A list of floats, a 1-D torch tensor or a 1-D numpy array (kept as given, detached)."""

Matrix = Annotated[
    list[list[float]], _validator(2), PlainSerializer(_as_json, return_type=list[list[float]], when_used="json")
]
"""Rows of floats, or a 2-D tensor / array (a 1-D one is one row)."""
