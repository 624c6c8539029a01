"""Small stores written without a model, through the same calls as the dump: for tests and demos of the readers."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from .files import write_json_atomic, write_safetensors_atomic
from .manifest import (
    MANIFEST,
    ModelInfo,
    RunningStats,
    ShardRecord,
    ShuffleInfo,
    StoreManifest,
    TokenizerInfo,
    build_manifest,
    record_file,
    shard_file,
    shard_metadata,
)

Values = Callable[[str, torch.Tensor], torch.Tensor]
"""(hook, global row numbers [n]) -> activations [n, d]."""


def _random_values(seed: int, widths: Mapping[str, int]) -> Values:
    def values(hook: str, rows: torch.Tensor) -> torch.Tensor:
        first = int(rows[0]) if rows.numel() else 0
        generator = torch.Generator().manual_seed(seed * 1_000_003 + list(widths).index(hook) * 7919 + first)
        return torch.randn(len(rows), widths[hook], generator=generator)

    return values


def write_synthetic_store(
    root: Path,
    shard_tokens: Sequence[int],
    hooks: Mapping[str, int],
    *,
    dtype: torch.dtype = torch.float32,
    gradients: bool = False,
    context_length: int = 4,
    vocab_size: int = 100,
    values: Values | None = None,
    seed: int = 0,
) -> StoreManifest:
    """A complete store at ``root``: shards of ``shard_tokens`` rows, ``hooks`` mapping hook name -> d.

    Activations come from ``values`` (default: seeded standard normal); gradients, when stored, are the activations
    negated. Row r (global) has token id r % vocab_size, document r // context_length, position r % context_length.
    """
    root = Path(root)
    values = values or _random_values(seed, hooks)
    records = []
    start = 0
    for index, tokens in enumerate(shard_tokens):
        rows = torch.arange(start, start + tokens, dtype=torch.int64)
        files, stats, grad_stats = {}, {}, {}
        for hook, d in hooks.items():
            activations = values(hook, rows).to(dtype).reshape(tokens, d)
            tensors = {"activations": activations}
            if gradients:
                tensors["gradients"] = -activations
                grad_stats[hook] = RunningStats.of(tensors["gradients"])
            tensors |= {
                "token_ids": (rows % vocab_size).to(torch.int32),
                "document_ids": rows // context_length,
                "positions": (rows % context_length).to(torch.int32),
            }
            files[hook] = write_safetensors_atomic(root, shard_file("shards", hook, index), tensors,
                                                   shard_metadata(hook, index))
            stats[hook] = RunningStats.of(activations)
        record = ShardRecord(index=index, tokens=tokens, token_start=start, files=files, stats=stats,
                             grad_stats=grad_stats)
        write_json_atomic(root / record_file("shards", index), record)
        records.append(record)
        start += tokens
    contexts = math.ceil(start / context_length)
    manifest = build_manifest(
        records,
        hooks=[(hook, [d], str(dtype).removeprefix("torch."), gradients) for hook, d in hooks.items()],
        model=ModelInfo(id="synthetic", dtype="float32"),
        tokenizer=TokenizerInfo(name_or_path="synthetic", vocab_size=vocab_size),
        context_length=context_length,
        prepend_bos=False,
        dtype=str(dtype).removeprefix("torch."),
        contexts=contexts,
        documents=contexts,
        shuffle=ShuffleInfo(enabled=False, seed=0),
        config={"synthetic": {"shard_tokens": list(shard_tokens), "hooks": dict(hooks), "seed": seed}},
    )
    write_json_atomic(root / MANIFEST, manifest)
    return manifest
