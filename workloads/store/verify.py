"""Checking a whole store: the manifest, every file's size and sha256, and every shard file's header."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .common import StoreError
from .files import ShardFile, verify_file
from .manifest import SHARD_FORMAT, HookInfo, ShardEntry, StoreManifest, load_manifest, shard_metadata

# How many problems a StoreError spells out before it only counts the rest.
_SHOWN = 5


def header_problems(shard: ShardFile, hook: HookInfo, entry: ShardEntry) -> list[str]:
    """What in one hook's shard file disagrees with the manifest: tensors, shapes, dtypes, metadata."""
    rows = entry.tokens
    stored = getattr(torch, hook.dtype)
    expected: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
        "activations": ((rows, hook.d), stored),
        "token_ids": ((rows,), torch.int32),
        "document_ids": ((rows,), torch.int64),
        "positions": ((rows,), torch.int32),
    }
    if hook.gradients:
        expected["gradients"] = ((rows, hook.d), stored)
    problems = []
    for name, (shape, dtype) in expected.items():
        if name not in shard.names:
            problems.append(f"{shard.path}: no tensor {name!r}")
        elif shard.shape(name) != shape or shard.dtype(name) != dtype:
            problems.append(f"{shard.path}: {name} is {shard.dtype(name)} {list(shard.shape(name))}, "
                            f"the manifest says {dtype} {list(shape)}")
    wanted = shard_metadata(hook.name, entry.index)
    if {key: shard.metadata.get(key) for key in wanted} != wanted:
        problems.append(f"{shard.path}: metadata {shard.metadata} is not that of {SHARD_FORMAT} "
                        f"hook {hook.name!r} shard {entry.index}")
    return problems


def _check(root: Path, entry: ShardEntry, hook: HookInfo) -> list[str]:
    file = entry.files[hook.name]
    try:
        verify_file(root, file)
        return header_problems(ShardFile(root / file.path), hook, entry)
    except StoreError as err:
        return [str(err)]


def _summary(root: Path, problems: list[str]) -> str:
    shown = "\n  ".join(problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return f"{root}: {len(problems)} problem(s):\n  {shown}{more}"


def verify_store(root: Path, *, workers: int = 4) -> StoreManifest:
    """The store's manifest, once every file it lists has its size, sha256 and header; StoreError otherwise."""
    root = Path(root)
    manifest = load_manifest(root)
    jobs = [(entry, hook) for entry in manifest.shards for hook in manifest.hooks]
    # hashlib releases the GIL while hashing, so threads read and hash files in parallel.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = [p for found in pool.map(lambda job: _check(root, *job), jobs) for p in found]
    if problems:
        raise StoreError(_summary(root, problems))
    return manifest
