"""The on-disk activation store of ActivationDump: its layout, records, files, verification and reader.

The layout and the JSON records (``manifest``, ``common``) import no torch, so this package does not either; the
names that need torch (files, verification, the reader) are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .common import FileEntry, StoreError, UnknownHookError
from .manifest import (
    FORMAT,
    MANIFEST,
    SHARD_FORMAT,
    HookInfo,
    HookStats,
    ModelInfo,
    RunningStats,
    ShardEntry,
    ShardRecord,
    ShuffleInfo,
    StoreManifest,
    TokenizerInfo,
    build_manifest,
    hook_dirname,
    load_manifest,
    load_records,
    record_file,
    shard_file,
    shard_metadata,
    shard_name,
)

if TYPE_CHECKING:
    from .files import ShardFile, sha256_file, verify_file, write_json_atomic, write_safetensors_atomic
    from .reader import ActivationStore, Position, ReaderBatch, StoreReader
    from .verify import verify_store

_NEEDS_TORCH = {
    "ShardFile": "files",
    "sha256_file": "files",
    "verify_file": "files",
    "write_json_atomic": "files",
    "write_safetensors_atomic": "files",
    "verify_store": "verify",
    "ActivationStore": "reader",
    "Position": "reader",
    "ReaderBatch": "reader",
    "StoreReader": "reader",
}


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TORCH:
        return getattr(import_module(f"{__name__}.{_NEEDS_TORCH[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMAT",
    "MANIFEST",
    "SHARD_FORMAT",
    "ActivationStore",
    "FileEntry",
    "HookInfo",
    "HookStats",
    "ModelInfo",
    "Position",
    "ReaderBatch",
    "RunningStats",
    "ShardEntry",
    "ShardFile",
    "ShardRecord",
    "ShuffleInfo",
    "StoreError",
    "StoreManifest",
    "StoreReader",
    "TokenizerInfo",
    "UnknownHookError",
    "build_manifest",
    "hook_dirname",
    "load_manifest",
    "load_records",
    "record_file",
    "sha256_file",
    "shard_file",
    "shard_metadata",
    "shard_name",
    "verify_file",
    "verify_store",
    "write_json_atomic",
    "write_safetensors_atomic",
]
