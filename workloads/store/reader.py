"""Reading a store for training: one global stream of rows per epoch, split across ranks, resumable exactly.

The rows of all shards form one stream. With a shuffle window S the stream is permuted inside aligned windows of S
rows (a permutation seeded from (seed, epoch, window)), so any step's rows follow from the position alone. A step
consumes batch_size * world_size rows of the stream; rank r takes the r-th batch_size of them. A Position counts
the stream rows consumed in the epoch, whatever the world size, so a run resumes on any number of ranks.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch

from .common import StoreError
from .files import ShardFile, verify_file
from .manifest import StoreManifest, load_manifest
from .verify import header_problems, verify_store

# Window permutations kept: consecutive steps reuse a window's permutation, and a step may straddle a boundary.
_CACHED_WINDOWS = 4


@dataclass(frozen=True)
class Position:
    """Where a reader is: the epoch, and the stream rows consumed in it (what a training checkpoint saves)."""

    epoch: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        for name in ("epoch", "offset"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"Position.{name} must be a non-negative int, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Position:
        if set(data) != {"epoch", "offset"}:
            raise ValueError(f"a Position is {{'epoch', 'offset'}}, got keys {sorted(data)}")
        return cls(epoch=data["epoch"], offset=data["offset"])


class ActivationStore:
    """A complete store on disk: its manifest, and its shard files opened on demand.

    The first time this object opens a file it checks the file's size and sha256 against the manifest and its
    header against the hook; later opens trust that check. At most ``max_open_files`` files stay mapped.
    """

    def __init__(self, root: str | Path, *, max_open_files: int = 256) -> None:
        self.root = Path(root)
        self.manifest: StoreManifest = load_manifest(self.root)
        self.shard_ends: list[int] = list(accumulate(shard.tokens for shard in self.manifest.shards))
        self._max_open_files = max(1, max_open_files)
        self._verified: set[str] = set()
        self._open: OrderedDict[str, ShardFile] = OrderedDict()

    @property
    def tokens(self) -> int:
        return self.manifest.tokens

    @property
    def hooks(self) -> list[str]:
        return [hook.name for hook in self.manifest.hooks]

    def locate(self, global_row: int) -> tuple[int, int]:
        """(shard index, row in that shard) of a row of the store."""
        if not 0 <= global_row < self.tokens:
            raise IndexError(f"row {global_row} is outside the store's {self.tokens} rows")
        shard = bisect_right(self.shard_ends, global_row)
        return shard, global_row - self.manifest.shards[shard].token_start

    def verify(self, *, workers: int = 4) -> StoreManifest:
        return verify_store(self.root, workers=workers)

    def shard(self, hook: str, index: int) -> ShardFile:
        info = self.manifest.hook(hook)
        if not 0 <= index < len(self.manifest.shards):
            raise IndexError(f"shard {index} is outside the store's {len(self.manifest.shards)} shards")
        entry = self.manifest.shards[index]
        file = entry.files[hook]
        if file.path in self._open:
            self._open.move_to_end(file.path)
            return self._open[file.path]
        if file.path not in self._verified:
            verify_file(self.root, file)
        opened = ShardFile(self.root / file.path)
        if file.path not in self._verified:
            problems = header_problems(opened, info, entry)
            if problems:
                raise StoreError("; ".join(problems))
            self._verified.add(file.path)
        self._open[file.path] = opened
        if len(self._open) > self._max_open_files:
            self._open.popitem(last=False)
        return opened


@dataclass(frozen=True)
class ReaderBatch:
    activations: dict[str, torch.Tensor]
    """Hook -> [batch_size, d]."""
    gradients: dict[str, torch.Tensor] | None
    token_ids: torch.Tensor
    """[batch_size] int64."""
    position: Position
    """The position after this step: checkpoint it with the step's results."""


def _window_seed(seed: int, epoch: int, window: int) -> int:
    digest = hashlib.sha256(f"interp-store-shuffle/{seed}/{epoch}/{window}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _index(local: torch.Tensor) -> torch.Tensor | slice:
    """Sorted distinct rows of one shard: a slice when they are contiguous (one sequential read)."""
    first, last = int(local[0]), int(local[-1])
    return slice(first, last + 1) if last - first + 1 == local.numel() else local


class StoreReader:
    """Batches of one rank from a store, from a Position; iterating advances ``position``."""

    def __init__(
        self,
        store: ActivationStore | str | Path,
        hooks: Sequence[str],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        start: Position = Position(),
        shuffle_window: int = 0,
        seed: int = 0,
        loop: bool = False,
        gradients: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        self.store = store if isinstance(store, ActivationStore) else ActivationStore(store)
        self.hooks = [hooks] if isinstance(hooks, str) else list(hooks)
        if not self.hooks or len(set(self.hooks)) != len(self.hooks):
            raise ValueError(f"hooks must be distinct and at least one, got {self.hooks}")
        infos = [self.store.manifest.hook(name) for name in self.hooks]
        if gradients and not all(info.gradients for info in infos):
            raise StoreError(f"{self.store.root}: no gradients stored for "
                             f"{[info.name for info in infos if not info.gradients]}")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or shuffle_window < 0:
            raise ValueError(f"need batch_size >= 1, 0 <= rank < world_size, shuffle_window >= 0; got "
                             f"batch_size={batch_size} rank={rank} world_size={world_size} "
                             f"shuffle_window={shuffle_window}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.step_rows = batch_size * world_size
        if self.step_rows > self.store.tokens:
            raise ValueError(f"a step needs batch_size * world_size = {self.step_rows} rows; "
                             f"the store has {self.store.tokens}")
        self.shuffle_window, self.seed, self.loop, self.gradients = shuffle_window, seed, loop, gradients
        self.device, self.dtype = torch.device(device), dtype
        self.position = start
        self._ends = torch.tensor(self.store.shard_ends, dtype=torch.int64)
        self._windows: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()

    @property
    def steps_per_epoch(self) -> int:
        return self.store.tokens // self.step_rows

    def __len__(self) -> int:
        """Steps left in the current epoch."""
        return max(0, self.store.tokens - self.position.offset) // self.step_rows

    def __iter__(self) -> Iterator[ReaderBatch]:
        while True:
            position = self.position
            if position.offset + self.step_rows > self.store.tokens:
                if not self.loop:
                    return
                self.position = Position(position.epoch + 1, 0)
                continue
            first = position.offset + self.rank * self.batch_size
            activations, gradients, token_ids = self._read(self.stream_rows(position.epoch, first, self.batch_size))
            self.position = Position(position.epoch, position.offset + self.step_rows)
            yield ReaderBatch(activations, gradients, token_ids, self.position)

    def stream_rows(self, epoch: int, first: int, count: int) -> torch.Tensor:
        """The store rows at stream places [first, first + count) of ``epoch``."""
        places = torch.arange(first, first + count, dtype=torch.int64)
        size = self.shuffle_window
        if size == 0:
            return places
        rows = torch.empty_like(places)
        for window in range(first // size, (first + count - 1) // size + 1):
            base = window * size
            lo, hi = max(first, base), min(first + count, base + size)
            rows[lo - first : hi - first] = base + self._permutation(epoch, window)[lo - base : hi - base]
        return rows

    def _permutation(self, epoch: int, window: int) -> torch.Tensor:
        key = (epoch, window)
        if key not in self._windows:
            size = min(self.shuffle_window, self.store.tokens - window * self.shuffle_window)
            generator = torch.Generator().manual_seed(_window_seed(self.seed, epoch, window))
            self._windows[key] = torch.randperm(size, generator=generator)
            if len(self._windows) > _CACHED_WINDOWS:
                self._windows.popitem(last=False)
        return self._windows[key]

    def _read(
        self, rows: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, torch.Tensor]:
        # Read each shard's rows in ascending order (locality), then put them back in stream order.
        order = torch.argsort(rows)
        ascending = rows[order]
        shards, counts = torch.unique_consecutive(torch.searchsorted(self._ends, ascending, right=True),
                                                  return_counts=True)
        pieces = [
            (int(shard), _index(local - self.store.manifest.shards[int(shard)].token_start))
            for shard, local in zip(shards, torch.split(ascending, counts.tolist()), strict=True)
        ]

        def gather(hook: str, name: str) -> torch.Tensor:
            parts = [self.store.shard(hook, shard).rows(name, index) for shard, index in pieces]
            data = torch.cat(parts) if len(parts) > 1 else parts[0]
            out = torch.empty_like(data)
            out[order] = data
            return out

        def place(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device=self.device, dtype=self.dtype or tensor.dtype)

        activations = {hook: place(gather(hook, "activations")) for hook in self.hooks}
        gradients = {hook: place(gather(hook, "gradients")) for hook in self.hooks} if self.gradients else None
        token_ids = gather(self.hooks[0], "token_ids").to(device=self.device, dtype=torch.int64)
        return activations, gradients, token_ids
