"""Training checkpoints: safetensors for every tensor, JSON for the rest, checksummed, written atomically.

Layout under ``<output>/checkpoints/``::

    step-000001000/state.json            # step, tokens, data position, RNG, metric accumulators, per-SAE scalars
    step-000001000/<sae>.safetensors     # the SAE's parameters, its Adam moments, its dead-latent counters
    step-000001000/checksums.json        # sha256 and size of every file above; written last

A checkpoint is written into a hidden temporary folder, every file fsynced, then renamed into place, so a reader
sees a complete checkpoint or none. Loading checks every checksum and falls back to the previous checkpoint when the
newest does not verify. Nothing is unpickled: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp_operator.logs import get_logger

CHECKPOINTS = "checkpoints"
STATE = "state.json"
CHECKSUMS = "checksums.json"
_STEP_DIR = re.compile(r"^step-(\d{9})$")
_log = get_logger("interp_workloads.train.checkpoint")


class CheckpointError(ValueError):
    """A checkpoint does not verify (missing file, wrong size or checksum, unreadable)."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]
    """File stem (an SAE name) -> tensors."""


def step_dir(root: Path, step: int) -> Path:
    return root / CHECKPOINTS / f"step-{step:09d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: Path, step: int, state: Mapping[str, Any],
                    tensors: Mapping[str, Mapping[str, torch.Tensor]], *, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep the ``keep`` newest; returns its folder."""
    final = step_dir(root, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        files: dict[str, dict[str, Any]] = {}
        for stem, group in tensors.items():
            path = temporary / f"{stem}.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(path))
            files[path.name] = {}
        (temporary / STATE).write_text(json.dumps(dict(state), sort_keys=True))
        files[STATE] = {}
        for name in files:
            path = temporary / name
            _fsync(path)
            files[name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        (temporary / CHECKSUMS).write_text(json.dumps({"step": step, "files": files}, sort_keys=True))
        _fsync(temporary / CHECKSUMS)
        if final.exists():  # the same step written again (a resumed run): the older copy of it goes
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    prune(root, keep)
    return final


def steps(root: Path) -> list[int]:
    """Checkpoint steps present (complete renames only), oldest first."""
    folder = root / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir())


def prune(root: Path, keep: int) -> None:
    for step in steps(root)[:-keep]:
        shutil.rmtree(step_dir(root, step), ignore_errors=True)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The checksums record of a checkpoint folder whose files all verify; CheckpointError otherwise."""
    try:
        record = json.loads((path / CHECKSUMS).read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: no readable {CHECKSUMS}: {err}") from err
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if file.stat().st_size != entry.get("bytes") or _sha256(file) != entry.get("sha256"):
            raise CheckpointError(f"{file}: size or sha256 differs from {CHECKSUMS}")
    return record  # type: ignore[no-any-return]


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> Checkpoint:
    record = verify_checkpoint(path)
    try:
        state = json.loads((path / STATE).read_text())
        tensors = {Path(name).stem: load_file(str(path / name), device=str(device))
                   for name in record["files"] if name.endswith(".safetensors")}
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    return Checkpoint(path=path, step=int(record["step"]), state=state, tensors=tensors)


def load_latest(root: Path, device: str | torch.device = "cpu") -> Checkpoint | None:
    """The newest checkpoint that verifies (a corrupt one is logged and skipped), or None."""
    for step in reversed(steps(root)):
        path = step_dir(root, step)
        try:
            return read_checkpoint(path, device)
        except CheckpointError as err:
            _log.warning("checkpoint does not verify; trying the previous one", path=str(path), error=str(err))
    return None
