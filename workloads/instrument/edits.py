"""Apply intervention descriptions to activation tensors: per row, or to many rows at once for a shared edit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..spec import (
    Ablation,
    AddVector,
    FunctionEdit,
    LocalIntervention,
    Positions,
    PositionSlice,
    Projection,
    Replace,
    SAESplice,
)
from .sae import SAE


class InterventionError(ValueError):
    """An intervention that is valid on its own but does not fit this model, hook or batch."""


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-padding token (works for left and right padding)."""
    seq = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return torch.where(attention_mask.bool(), seq, -1).max(dim=1).values.clamp(min=0)


def position_index(positions: Positions, seq_len: int, last: int, device: torch.device) -> torch.Tensor:
    """Positions of one row as a LongTensor (advanced indexing copies, so edits never alias the input)."""
    if positions == "all":
        return torch.arange(seq_len, device=device)
    if positions == "last":
        return torch.tensor([last], device=device)
    if isinstance(positions, PositionSlice):
        return torch.arange(seq_len, device=device)[positions.start : positions.stop]
    if not isinstance(positions, list):
        raise InterventionError(f"positions {positions!r} are not 'all', 'last', a slice or a list of indices")
    bad = [p for p in positions if not -seq_len <= p < seq_len]
    if bad:
        raise InterventionError(f"positions {bad} are outside a sequence of length {seq_len}")
    return torch.tensor([p % seq_len for p in positions], device=device)


def _as_float_tensor(values: Any, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A list, tensor or numpy array on ``like``'s device (no copy when it is already there in ``dtype``)."""
    if isinstance(values, torch.Tensor):
        return values.to(device=like.device, dtype=dtype)
    return torch.as_tensor(values, dtype=dtype, device=like.device)


def _vector(values: Any, width: int, what: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if len(values) != width:
        raise InterventionError(f"{what} has {len(values)} values but the hook has width {width}")
    return _as_float_tensor(values, like, dtype)


def steering_addend(edit: AddVector, width: int, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """What ``edit`` adds at each position it selects: ``scale * vector`` in ``dtype`` on ``like``'s device."""
    return edit.scale * _vector(edit.vector, width, f"vector for {edit.hook}", like, dtype)


def _edit_segment(edit: LocalIntervention, seg: torch.Tensor, saes: Mapping[str, SAE]) -> torch.Tensor:
    """Return the edited copy of ``seg`` ([rows, positions, width]); arithmetic in at least float32."""
    if isinstance(edit, SAESplice):
        return _splice(edit, seg, saes)
    if isinstance(edit, FunctionEdit):
        return _call(edit, seg)
    width = seg.shape[-1]
    dtype = torch.promote_types(seg.dtype, torch.float32)
    x = seg.to(dtype)
    if isinstance(edit, AddVector):
        out = x + steering_addend(edit, width, seg, dtype)
    elif isinstance(edit, Projection):
        u = _vector(edit.direction, width, f"direction for {edit.hook}", seg, dtype)
        u = u / u.norm()
        coef = x @ u
        target = {"set": torch.full_like(coef, edit.value), "scale": coef * edit.value,
                  "zero": torch.zeros_like(coef)}[edit.mode]
        out = x + (target - coef)[..., None] * u
    elif isinstance(edit, Ablation):
        if edit.mode == "zero":
            out = torch.zeros_like(x)
        else:
            if edit.mean is None:
                raise InterventionError(f"ablation at {edit.hook}: mode 'mean' needs 'mean'")
            out = _vector(edit.mean, width, f"mean for {edit.hook}", seg, dtype).expand_as(x).contiguous()
    elif isinstance(edit, Replace):
        n = seg.shape[-2]
        if len(edit.values) not in (1, n):
            raise InterventionError(f"replace at {edit.hook}: {len(edit.values)} rows of values for "
                                    f"{n} selected positions (give one row, or one per position)")
        if len(edit.values[0]) != width:
            raise InterventionError(f"replace at {edit.hook}: rows have {len(edit.values[0])} values "
                                    f"but the hook has width {width}")
        out = _as_float_tensor(edit.values, seg, dtype).expand_as(x).contiguous()
    else:
        raise InterventionError(f"{type(edit).__name__} is not an intervention; expected one of AddVector, "
                                "Projection, Ablation, Replace, SAESplice, FunctionEdit")
    return out.to(seg.dtype)


def _call(edit: FunctionEdit, seg: torch.Tensor) -> torch.Tensor:
    out = edit.fn(seg)
    if not isinstance(out, torch.Tensor) or out.shape != seg.shape:
        got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise InterventionError(f"FunctionEdit at {edit.hook}: fn must return a tensor of shape {list(seg.shape)}, "
                                f"got {got}")
    return out.to(seg.dtype).contiguous()


def _splice(edit: SAESplice, seg: torch.Tensor, saes: Mapping[str, SAE]) -> torch.Tensor:
    sae = saes.get(edit.sae)
    if sae is None:
        raise InterventionError(f"SAE {edit.sae!r} is not loaded; loaded: {sorted(saes) or 'none'}")
    if sae.d_in != seg.shape[-1]:
        raise InterventionError(f"SAE {edit.sae!r} reads width {sae.d_in} but hook {edit.hook} has width "
                                f"{seg.shape[-1]}")
    x = seg.reshape(-1, seg.shape[-1]).to(sae.dtype)
    latents = sae.encode(x)
    edited = latents.clone()
    for fe in edit.edits:
        if fe.feature >= edited.shape[-1]:
            raise InterventionError(f"SAE {edit.sae!r} has {edited.shape[-1]} features; got feature {fe.feature}")
        if fe.op == "clamp":
            edited[:, fe.feature] = fe.value
        elif fe.op == "scale":
            edited[:, fe.feature] *= fe.value
        else:
            edited[:, fe.feature] = 0.0
    if not edit.keep_error:
        return sae.decode(edited).to(seg.dtype).reshape(seg.shape)
    # x + decode(edited) - decode(latents) keeps the SAE's reconstruction error: an empty edit is exact.
    delta = sae.decode(edited) - sae.decode(latents)
    return seg + delta.to(seg.dtype).reshape(seg.shape)


def _runs(row_edits: Sequence[tuple[int, LocalIntervention]]) -> list[tuple[list[int], LocalIntervention]]:
    """Consecutive entries of one edit object on distinct rows, applied together (a batch-wide edit is one run)."""
    runs: list[tuple[list[int], LocalIntervention]] = []
    for row, edit in row_edits:
        if runs and runs[-1][1] is edit and row not in runs[-1][0]:
            runs[-1][0].append(row)
        else:
            runs.append(([row], edit))
    return runs


def apply_row_edits(
    x: torch.Tensor,
    row_edits: Sequence[tuple[int, LocalIntervention]],
    last: torch.Tensor,
    saes: Mapping[str, SAE],
) -> torch.Tensor:
    """Apply each (row, intervention) in order to a copy of ``x`` ([batch, seq, width]); each row's own order holds.

    Returns ``x`` itself when no position was selected.
    """
    if x.dim() != 3:
        raise InterventionError(f"interventions need a [batch, seq, width] activation, got shape {tuple(x.shape)}")
    out = x
    batch, seq_len = x.shape[:2]
    for rows, edit in _runs(row_edits):
        if edit.positions == "all" and rows == list(range(batch)):
            # A callable may edit its argument in place: never hand it the module's own tensor.
            out = _edit_segment(edit, x.clone() if out is x and isinstance(edit, FunctionEdit) else out, saes)
            continue
        if out is x:
            out = x.clone()
        if edit.positions == "last":
            index = last[rows].to(x.device)[:, None]
        else:
            positions = position_index(edit.positions, seq_len, 0, x.device)
            if positions.numel() == 0:
                continue
            index = positions.expand(len(rows), -1)
        row_index = torch.tensor(rows, device=x.device)[:, None]
        out[row_index, index] = _edit_segment(edit, out[row_index, index], saes)
    return out
