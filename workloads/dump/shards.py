"""Writing one shard of every hook point, recognising shards that are already complete, and the writer thread."""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from pydantic import ValidationError

from interp_operator.logs import get_logger

from ..store.files import FileEntry, StoreError, verify_file, write_json_atomic, write_safetensors_atomic
from ..store.manifest import RunningStats, ShardRecord, record_file, shard_file, shard_metadata

_log = get_logger("interp_workloads.dump")


def derive_seed(seed: int, purpose: str, index: int) -> int:
    """A 63-bit seed per (seed, purpose, index): independent streams that any process derives the same way."""
    digest = hashlib.sha256(f"{seed}/{purpose}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, purpose: str, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, index))


def completed_record(root: Path, stage: str, index: int, *, check_files: bool = True) -> ShardRecord | None:
    """The shard's record if the shard is complete: its record exists and every file matches size and checksum.

    Anything else (no record, an unreadable one, a file that is missing or differs) means the shard is written again;
    atomic renames guarantee that a half-written file never carries the final name.
    """
    path = root / record_file(stage, index)
    if not path.exists():
        return None
    try:
        record = ShardRecord.model_validate(json.loads(path.read_text()))
        if check_files:
            for entry in record.files.values():
                verify_file(root, entry)
    except (OSError, ValueError, ValidationError, StoreError) as err:
        _log.warning("shard is incomplete; writing it again", stage=stage, shard=index, reason=str(err))
        return None
    return record


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files of a write that a crash interrupted (only the shard's owner writes it, so none is live)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)


def write_shard(
    root: Path,
    stage: str,
    index: int,
    token_start: int,
    columns: Mapping[str, torch.Tensor],
    activations: Mapping[str, torch.Tensor],
    gradients: Mapping[str, torch.Tensor] | None = None,
) -> ShardRecord:
    """One safetensors file per hook point (activations, gradients and the token columns), then the record.

    The record is written last: a shard is complete only when its record exists.
    """
    for relpath in [*(shard_file(stage, hook, index) for hook in activations), record_file(stage, index)]:
        remove_stale_temporaries(root / relpath)
    files: dict[str, FileEntry] = {}
    stats: dict[str, RunningStats] = {}
    grad_stats: dict[str, RunningStats] = {}
    tokens = 0
    for hook, acts in activations.items():
        tensors = {"activations": acts, **columns}
        stats[hook] = RunningStats.of(acts)
        if gradients is not None:
            tensors["gradients"] = gradients[hook]
            grad_stats[hook] = RunningStats.of(gradients[hook])
        files[hook] = write_safetensors_atomic(root, shard_file(stage, hook, index), tensors,
                                               shard_metadata(hook, index))
        tokens = acts.shape[0]
    record = ShardRecord(index=index, tokens=tokens, token_start=token_start, files=files, stats=stats,
                         grad_stats=grad_stats)
    write_json_atomic(root / record_file(stage, index), record)
    return record


class BackgroundWriter:
    """Runs writes in one thread so that the next forward passes overlap the current shard's I/O.

    At most ``depth`` writes wait in the queue (memory bound: that many shards held in memory besides the one being
    filled). The first error is raised in the caller at its next ``submit`` or at ``close``.
    """

    def __init__(self, depth: int = 1):
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as err:  # re-raised in the main thread
                    self._error = err

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], object]) -> None:
        self._raise()
        self._queue.put(job)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()
