"""The batch's per-row interventions as hook functions, resolved once per batch and span of steps, not per step.

A row's edits at a decode step depend only on the row's position, and every row advances by one position per step.
:class:`DecodeEdits` resolves all rows' edits for a window of coming steps at once (:func:`.positions.columns` over
the window) and keeps the same hook functions for as long as the set of (row, edit) pairs that apply stays the
same: until the batch changes, an edit starts or stops applying, or the window ends.

At a site where every edit that applies is a steering vector, the rows' vectors form one [batch, tokens, width]
matrix (zeros for rows without one) added in one operation. A row with several vectors at a site gets one matrix per
vector, added in the row's order with the same rounding as one edit after another. Any other edit at a site sends
that site through :func:`..instrument.edits.apply_row_edits`, row by row, as a forward with interventions does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..instrument import InterventionError, Site
from ..instrument.edits import apply_row_edits, steering_addend
from ..instrument.sae import SAE
from ..spec import AddVector, Intervention
from . import positions as pos

SiteFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RowEdits:
    """One request's interventions resolved to sites; its steering vectors are converted to tensors once."""

    prompt_len: int
    edits: list[tuple[Site, Intervention]]
    _addends: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = field(default_factory=dict)

    def addend(self, j: int, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``scale * vector`` of the row's ``j``-th edit (an AddVector) in ``dtype`` on ``like``'s device."""
        key = (j, dtype, like.device)
        value = self._addends.get(key)
        if value is None:
            edit = self.edits[j][1]
            assert isinstance(edit, AddVector)
            value = self._addends[key] = steering_addend(edit, like.shape[-1], like, dtype)
        return value


class BatchRow(Protocol):
    edits: RowEdits
    length: int
    """Position of the next token fed in."""


@dataclass(frozen=True)
class _Entry:
    row: int
    edits: RowEdits
    index: int
    """Which of the row's edits."""
    cols: list[int]
    """Offsets of this pass's tokens the edit applies to."""

    @property
    def edit(self) -> Intervention:
        return self.edits.edits[self.index][1]


class _RowVectors:
    """Each row's steering vectors at one site as dense [batch, tokens, width] matrices, built on the first call."""

    def __init__(self, entries: Sequence[_Entry], batch: int, count: int) -> None:
        self.batch, self.count = batch, count
        # The k-th layer holds every row's k-th vector at this site, so a row's vectors are added in its order.
        self.layers: list[list[_Entry]] = []
        seen: dict[int, int] = {}
        for entry in entries:
            k = seen[entry.row] = seen.get(entry.row, -1) + 1
            if k == len(self.layers):
                self.layers.append([])
            self.layers[k].append(entry)
        self._matrices: tuple[torch.dtype, torch.device, list[torch.Tensor]] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._matrices is None or self._matrices[0] is not x.dtype or self._matrices[1] != x.device:
            self._matrices = (x.dtype, x.device, self._build(x))
        out = x
        for matrix in self._matrices[2]:
            out = out + matrix
            if out.dtype is not x.dtype:
                # Promoted to float32 and rounded back: the arithmetic of one AddVector on its own.
                out = out.to(x.dtype)
        return out

    def _build(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 3 or x.shape[0] != self.batch or x.shape[1] != self.count:
            raise InterventionError(f"interventions need a [batch, seq, width] activation of {self.batch} rows and "
                                    f"{self.count} tokens, got shape {tuple(x.shape)}")
        dtype = torch.promote_types(x.dtype, torch.float32)
        return [self._matrix(layer, x, dtype) for layer in self.layers]

    def _matrix(self, layer: list[_Entry], x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        addends = torch.stack([entry.edits.addend(entry.index, x, dtype) for entry in layer])
        rows = [entry.row for entry in layer for _ in entry.cols]
        cols = [col for entry in layer for col in entry.cols]
        which = [k for k, entry in enumerate(layer) for _ in entry.cols]
        index = torch.tensor([rows, cols, which], device=x.device)
        matrix = torch.zeros(self.batch, self.count, x.shape[-1], dtype=dtype, device=x.device)
        # One scatter for the layer: an indexed assignment per row costs about what a whole decode step's add does.
        matrix[index[0], index[1]] = addends[index[2]]
        return matrix


def _site_fn(entries: Sequence[_Entry], batch: int, count: int, saes: Mapping[str, SAE]) -> SiteFn:
    if all(isinstance(e.edit, AddVector) for e in entries):
        return _RowVectors(entries, batch, count)
    row_edits = [(e.row, e.edit if e.edit.positions == "all" and len(e.cols) == count
                  else e.edit.model_copy(update={"positions": e.cols})) for e in entries]
    last = torch.zeros(batch, dtype=torch.long)  # unused: no edit above selects "last" any more
    return lambda x: apply_row_edits(x, row_edits, last, saes)


def _by_site(entries: Sequence[tuple[Site, _Entry]], batch: int, count: int,
             saes: Mapping[str, SAE]) -> dict[Site, SiteFn]:
    grouped: dict[Site, list[_Entry]] = {}
    for site, entry in entries:
        grouped.setdefault(site, []).append(entry)
    return {site: _site_fn(group, batch, count, saes) for site, group in grouped.items()}


def prompt_fns(rows: Sequence[RowEdits], width: int, saes: Mapping[str, SAE]) -> dict[Site, SiteFn]:
    """Hook functions for one pass over right-padded prompts ``width`` tokens wide."""
    entries = []
    for i, row in enumerate(rows):
        for j, (site, edit) in enumerate(row.edits):
            cols = pos.columns(edit.positions, row.prompt_len, 0, width)
            if cols:
                entries.append((site, _Entry(i, row, j, cols)))
    return _by_site(entries, len(rows), width, saes)


def _steps_unchanged(cols: list[int], window: int) -> int:
    """For how many of the coming steps an edit keeps applying (or not), from its offsets over the window."""
    if not cols:
        return window
    if cols[0] > 0:
        return cols[0]
    if cols[-1] == len(cols) - 1:
        return len(cols)
    return next(k for k, c in enumerate(cols) if c != k)


class DecodeEdits:
    """The hook functions of the coming decode steps; the same mapping is returned while it stays valid."""

    def __init__(self, saes: Mapping[str, SAE], window: int = 64) -> None:
        self.saes = saes
        self.window = window
        self._fns: dict[Site, SiteFn] = {}
        self._steps_left = 0

    def invalidate(self) -> None:
        """The batch changed: resolve again at the next step."""
        self._steps_left = 0

    def step_fns(self, rows: Sequence[BatchRow]) -> dict[Site, SiteFn]:
        """Hook functions for the next decode step (one token per row, at each row's ``length``)."""
        if self._steps_left <= 0:
            self._fns, self._steps_left = self._resolve(rows)
        self._steps_left -= 1
        return self._fns

    def _resolve(self, rows: Sequence[BatchRow]) -> tuple[dict[Site, SiteFn], int]:
        entries = []
        valid_for = self.window
        for i, row in enumerate(rows):
            for j, (site, edit) in enumerate(row.edits.edits):
                cols = pos.columns(edit.positions, row.edits.prompt_len, row.length, self.window)
                valid_for = min(valid_for, _steps_unchanged(cols, self.window))
                if cols and cols[0] == 0:
                    entries.append((site, _Entry(i, row.edits, j, [0])))
        return _by_site(entries, len(rows), 1, self.saes), valid_for
