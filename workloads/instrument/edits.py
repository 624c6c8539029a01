"""Apply intervention descriptions to activation tensors, row by row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..spec import Ablation, AddVector, Intervention, Positions, PositionSlice, Projection, Replace, SAESplice
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
    assert isinstance(positions, list)
    bad = [p for p in positions if not -seq_len <= p < seq_len]
    if bad:
        raise InterventionError(f"positions {bad} are outside a sequence of length {seq_len}")
    return torch.tensor([p % seq_len for p in positions], device=device)


def _vector(values: Sequence[float], width: int, what: str, like: torch.Tensor) -> torch.Tensor:
    if len(values) != width:
        raise InterventionError(f"{what} has {len(values)} values but the hook has width {width}")
    return torch.tensor(values, dtype=torch.float32, device=like.device)


def _edit_segment(edit: Intervention, seg: torch.Tensor, saes: Mapping[str, SAE]) -> torch.Tensor:
    """Return the edited copy of ``seg`` ([n, width]); arithmetic in float32, result in seg's dtype."""
    width = seg.shape[-1]
    x = seg.float()
    if isinstance(edit, AddVector):
        out = x + edit.scale * _vector(edit.vector, width, f"vector for {edit.hook}", seg)
    elif isinstance(edit, Projection):
        u = _vector(edit.direction, width, f"direction for {edit.hook}", seg)
        u = u / u.norm()
        coef = x @ u
        target = {"set": torch.full_like(coef, edit.value), "scale": coef * edit.value,
                  "zero": torch.zeros_like(coef)}[edit.mode]
        out = x + (target - coef)[:, None] * u
    elif isinstance(edit, Ablation):
        if edit.mode == "zero":
            out = torch.zeros_like(x)
        else:
            assert edit.mean is not None
            out = _vector(edit.mean, width, f"mean for {edit.hook}", seg).expand_as(x)
    elif isinstance(edit, Replace):
        if len(edit.values) not in (1, seg.shape[0]):
            raise InterventionError(f"replace at {edit.hook}: {len(edit.values)} rows of values for "
                                    f"{seg.shape[0]} selected positions (give one row, or one per position)")
        if len(edit.values[0]) != width:
            raise InterventionError(f"replace at {edit.hook}: rows have {len(edit.values[0])} values "
                                    f"but the hook has width {width}")
        out = torch.tensor(edit.values, dtype=torch.float32, device=seg.device).expand_as(x)
    elif isinstance(edit, SAESplice):
        return _splice(edit, seg, saes)
    else:  # pragma: no cover - the discriminated union is closed
        raise InterventionError(f"unknown intervention {type(edit).__name__}")
    return out.to(seg.dtype)


def _splice(edit: SAESplice, seg: torch.Tensor, saes: Mapping[str, SAE]) -> torch.Tensor:
    sae = saes.get(edit.sae)
    if sae is None:
        raise InterventionError(f"SAE {edit.sae!r} is not loaded; loaded: {sorted(saes) or 'none'}")
    if sae.d_in != seg.shape[-1]:
        raise InterventionError(f"SAE {edit.sae!r} reads width {sae.d_in} but hook {edit.hook} has width "
                                f"{seg.shape[-1]}")
    x = seg.to(sae.dtype)
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
    # x + decode(edited) - decode(latents) keeps the SAE's reconstruction error: an empty edit is exact.
    delta = sae.decode(edited) - sae.decode(latents)
    return seg + delta.to(seg.dtype)


def apply_row_edits(
    x: torch.Tensor,
    row_edits: Sequence[tuple[int, Intervention]],
    last: torch.Tensor,
    saes: Mapping[str, SAE],
) -> torch.Tensor:
    """Apply each (row, intervention) in order to a copy of ``x`` ([batch, seq, width])."""
    if x.dim() != 3:
        raise InterventionError(f"interventions need a [batch, seq, width] activation, got shape {tuple(x.shape)}")
    out = x.clone()
    seq_len = x.shape[1]
    for row, edit in row_edits:
        idx = position_index(edit.positions, seq_len, int(last[row]), x.device)
        if idx.numel() == 0:
            continue
        out[row, idx] = _edit_segment(edit, out[row, idx], saes)
    return out
