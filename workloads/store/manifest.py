"""The store's layout and its JSON records: per-shard sidecars and the manifest (torch-free: pydantic only).

A store is complete when ``manifest.json`` exists; it is written last, from the sidecar records of every shard.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .common import FileEntry, StoreError, UnknownHookError

if TYPE_CHECKING:
    import torch

FORMAT: Final = "interp-activation-store/v1"
SHARD_FORMAT: Final = "interp-activation-shard/v1"
MANIFEST: Final = "manifest.json"

StoredDType = Literal["float32", "float16", "bfloat16"]

NonNegative = Annotated[int, Field(ge=0)]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def hook_dirname(hook: str) -> str:
    """The hook name as a directory name: [A-Za-z0-9._-] kept, anything else replaced by ``_``."""
    return _UNSAFE.sub("_", hook)


def shard_file(stage: str, hook: str, index: int) -> str:
    """``shards/resid_post.3/shard-000012.safetensors``: one hook's file of one shard."""
    return f"{stage}/{hook_dirname(hook)}/{shard_name(index)}.safetensors"


def record_file(stage: str, index: int) -> str:
    """``shards/shard-000012.json``: the sidecar record of one shard, written after all its hook files."""
    return f"{stage}/{shard_name(index)}.json"


def shard_metadata(hook: str, index: int) -> dict[str, str]:
    """The safetensors metadata of one hook's shard file."""
    return {"format": SHARD_FORMAT, "hook": hook, "shard": str(index)}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RunningStats(_Model):
    """Sums over the rows of one hook that merge across shards: the L2 norm of every row."""

    count: NonNegative = 0
    sum_norm: float = 0.0
    sum_sq_norm: float = 0.0
    max_norm: float = 0.0

    @classmethod
    def of(cls, x: torch.Tensor) -> RunningStats:
        """Stats of the rows of ``x`` ([n, ...]): norms in float32, sums in float64, exactly rounded (math.fsum),
        so the numbers do not depend on the thread count or the order of the rows."""
        import torch

        n = x.shape[0]
        if n == 0:
            return cls()
        norms = torch.linalg.vector_norm(x.detach().reshape(n, -1), dim=1, dtype=torch.float32).double().cpu()
        values = norms.tolist()
        return cls(
            count=n,
            sum_norm=math.fsum(values),
            sum_sq_norm=math.fsum((norms * norms).tolist()),
            max_norm=max(values),
        )

    def merge(self, other: RunningStats) -> RunningStats:
        return RunningStats(
            count=self.count + other.count,
            sum_norm=self.sum_norm + other.sum_norm,
            sum_sq_norm=self.sum_sq_norm + other.sum_sq_norm,
            max_norm=max(self.max_norm, other.max_norm),
        )


class HookStats(_Model):
    """Norm statistics of one hook over the whole store. SAE training scales inputs by sqrt(d) / mean_norm."""

    count: NonNegative
    mean_norm: float
    rms_norm: float
    max_norm: float

    @classmethod
    def from_running(cls, stats: RunningStats) -> HookStats:
        if stats.count == 0:
            return cls(count=0, mean_norm=0.0, rms_norm=0.0, max_norm=0.0)
        return cls(
            count=stats.count,
            mean_norm=stats.sum_norm / stats.count,
            rms_norm=math.sqrt(stats.sum_sq_norm / stats.count),
            max_norm=stats.max_norm,
        )


class ShardRecord(_Model):
    """The sidecar of one shard (``<stage>/shard-NNNNNN.json``): its files and the stats of its rows."""

    index: NonNegative
    tokens: NonNegative
    token_start: NonNegative
    files: dict[str, FileEntry]
    stats: dict[str, RunningStats]
    grad_stats: dict[str, RunningStats] = {}

    @model_validator(mode="after")
    def _stats_of_the_files(self) -> ShardRecord:
        # Records of hook shards have stats for every file; records of other stages (tokens/) have files only.
        for kind, stats in (("stats", self.stats), ("gradient stats", self.grad_stats)):
            if not set(stats) <= set(self.files):
                raise ValueError(f"shard {self.index}: {kind} for hooks without files: "
                                 f"{sorted(set(stats) - set(self.files))}")
        for hook, stats in [*self.stats.items(), *self.grad_stats.items()]:
            if stats.count != self.tokens:
                raise ValueError(f"shard {self.index}: stats of {hook!r} count {stats.count} rows, "
                                 f"the shard has {self.tokens} tokens")
        return self


class ModelInfo(_Model):
    id: str
    revision: str | None = None
    family: str | None = None
    dtype: str


class TokenizerInfo(_Model):
    name_or_path: str
    vocab_size: Annotated[int, Field(ge=1)]
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    sha256: str | None = None
    """Of tokenizer.json, when the tokenizer has one."""


class HookInfo(_Model):
    name: str
    d: Annotated[int, Field(ge=1)]
    shape: list[Annotated[int, Field(ge=1)]]
    """The per-token shape before it was flattened to d (e.g. [heads, head_dim])."""
    dtype: StoredDType
    gradients: bool
    stats: HookStats
    grad_stats: HookStats | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HookInfo:
        if math.prod(self.shape) != self.d:
            raise ValueError(f"hook {self.name!r}: shape {self.shape} does not flatten to d={self.d}")
        if self.grad_stats is not None and not self.gradients:
            raise ValueError(f"hook {self.name!r}: gradient stats without gradients")
        return self


class ShuffleInfo(_Model):
    enabled: bool
    seed: int


class ShardEntry(_Model):
    index: NonNegative
    token_start: NonNegative
    tokens: NonNegative
    files: dict[str, FileEntry]
    """Hook name -> its file of this shard."""


class StoreManifest(_Model):
    format: Literal["interp-activation-store/v1"] = FORMAT
    model: ModelInfo
    tokenizer: TokenizerInfo
    context_length: Annotated[int, Field(ge=1)]
    prepend_bos: bool
    dtype: str
    tokens: NonNegative
    contexts: NonNegative
    documents: NonNegative
    shuffle: ShuffleInfo
    hooks: list[HookInfo]
    shards: list[ShardEntry]
    bytes: NonNegative
    config: dict[str, Any]
    created_at: str

    @model_validator(mode="after")
    def _complete(self) -> StoreManifest:
        names = [hook.name for hook in self.hooks]
        if not names:
            raise ValueError("a store needs at least one hook")
        if len(set(names)) != len(names):
            raise ValueError(f"hook names repeat: {names}")
        expected_start = 0
        for position, shard in enumerate(self.shards):
            if shard.index != position:
                raise ValueError(f"shards must be indexed 0..{len(self.shards) - 1} in order; "
                                 f"entry {position} has index {shard.index}")
            if shard.token_start != expected_start:
                raise ValueError(f"shard {shard.index} starts at token {shard.token_start}, expected {expected_start} "
                                 "(token ranges must be contiguous from 0)")
            expected_start += shard.tokens
            missing = [name for name in names if name not in shard.files]
            if missing:
                raise ValueError(f"shard {shard.index} has no file for hooks {missing}")
            unknown = sorted(set(shard.files) - set(names))
            if unknown:
                raise ValueError(f"shard {shard.index} has files for unknown hooks {unknown}")
        if expected_start != self.tokens:
            raise ValueError(f"the shards hold {expected_start} tokens, the manifest says {self.tokens}")
        file_bytes = sum(file.bytes for shard in self.shards for file in shard.files.values())
        if file_bytes != self.bytes:
            raise ValueError(f"the shard files hold {file_bytes} bytes, the manifest says {self.bytes}")
        return self

    def hook(self, name: str) -> HookInfo:
        for hook in self.hooks:
            if hook.name == name:
                return hook
        raise UnknownHookError(f"the store has no hook {name!r}; it has: {', '.join(h.name for h in self.hooks)}")


def build_manifest(
    records: Sequence[ShardRecord],
    *,
    hooks: Sequence[tuple[str, list[int], str, bool]],
    **fields: Any,
) -> StoreManifest:
    """The manifest of the shards in ``records`` (any order) with ``hooks`` as (name, shape, dtype, gradients).

    Shards, token starts and stats are taken in shard-index order, so the result does not depend on which process
    wrote which shard. ``fields`` gives the rest of StoreManifest (``created_at`` defaults to now, UTC).
    """
    computed = {"shards", "hooks", "tokens", "bytes"} & set(fields)
    if computed:
        raise TypeError(f"build_manifest computes {sorted(computed)} from the records; do not pass them")
    ordered = sorted(records, key=lambda record: record.index)
    shards: list[ShardEntry] = []
    token_start = 0
    for record in ordered:
        shards.append(ShardEntry(index=record.index, token_start=token_start, tokens=record.tokens,
                                 files=record.files))
        token_start += record.tokens
    infos = []
    for name, shape, dtype, gradients in hooks:
        stats = RunningStats()
        grad_stats = RunningStats()
        for record in ordered:
            if name not in record.stats:
                raise ValueError(f"shard {record.index} has no stats for hook {name!r}")
            stats = stats.merge(record.stats[name])
            if gradients:
                if name not in record.grad_stats:
                    raise ValueError(f"shard {record.index} has no gradient stats for hook {name!r}")
                grad_stats = grad_stats.merge(record.grad_stats[name])
        infos.append(HookInfo(
            name=name, d=math.prod(shape), shape=list(shape), dtype=dtype, gradients=gradients,  # type: ignore[arg-type]
            stats=HookStats.from_running(stats),
            grad_stats=HookStats.from_running(grad_stats) if gradients else None,
        ))
    fields.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
    return StoreManifest(
        hooks=infos,
        shards=shards,
        tokens=token_start,
        bytes=sum(file.bytes for shard in shards for file in shard.files.values()),
        **fields,
    )


_M = TypeVar("_M", bound=BaseModel)


def _load(path: Path, model: type[_M]) -> _M:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise
    except (OSError, ValidationError) as err:
        raise StoreError(f"{path}: invalid {model.__name__}: {err}") from err


def load_manifest(root: str | Path) -> StoreManifest:
    """The validated manifest of the store at ``root``; StoreError if it is missing or invalid."""
    root = Path(root)
    try:
        return _load(root / MANIFEST, StoreManifest)
    except FileNotFoundError:
        raise StoreError(f"{root}: not a complete store: {MANIFEST} missing (the dump may still be running)") from None


def load_records(root: str | Path, stage: str) -> dict[int, ShardRecord]:
    """The sidecar records present under ``root/stage`` by shard index (the shards a dump has finished)."""
    records: dict[int, ShardRecord] = {}
    directory = Path(root) / stage
    for path in sorted(directory.glob("shard-*.json")):
        record = _load(path, ShardRecord)
        if path.name != Path(record_file(stage, record.index)).name:
            raise StoreError(f"{path}: holds the record of shard {record.index}")
        records[record.index] = record
    return records

