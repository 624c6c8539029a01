"""Stage 1: the corpus as fixed-length contexts, written by rank 0 as token shards that every rank reads.

Token shard k holds contexts [k*C, (k+1)*C) (C = tokensPerShard / contextLength): the shard boundaries depend on the
corpus and the spec alone, never on the number of ranks, which is what makes the store identical for any parallelism.
``tokens/index.json`` is written after the last token shard: until it exists, a rank waiting for shard k cannot tell
whether the corpus ends before it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from interp_operator.logs import get_logger

from ..corpus import CorpusError, iter_documents, pack_contexts, packing_for
from ..store.files import ShardFile, verify_file, write_json_atomic, write_safetensors_atomic
from ..store.manifest import ShardRecord, record_file, shard_name
from .config import DumpConfig
from .shards import completed_record, remove_stale_temporaries

STAGE = "tokens"
INDEX = "tokens/index.json"
POLL_S = 0.5
_log = get_logger("interp_workloads.dump")


class TokenIndex(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: int
    contexts: int
    tokens: int
    documents: int
    """Documents that contributed tokens (the last one possibly in part)."""
    prepend_bos: bool


def token_file(index: int) -> str:
    return f"{STAGE}/{shard_name(index)}.safetensors"


def read_index(root: Path) -> TokenIndex | None:
    path = root / INDEX
    return TokenIndex.model_validate_json(path.read_text()) if path.exists() else None


def _write_token_shard(root: Path, index: int, first_context: int, ids: list[np.ndarray],
                       docs: list[np.ndarray]) -> None:
    if completed_record(root, STAGE, index) is not None:
        return  # written by an earlier attempt: the corpus and spec are the same (the fingerprint says so)
    for relpath in (token_file(index), record_file(STAGE, index)):
        remove_stale_temporaries(root / relpath)
    token_ids = torch.from_numpy(np.concatenate(ids))
    tensors = {"token_ids": token_ids, "document_ids": torch.from_numpy(np.concatenate(docs))}
    entry = write_safetensors_atomic(root, token_file(index), tensors, {"shard": str(index)})
    length = ids[0].shape[0]
    record = ShardRecord(index=index, tokens=int(token_ids.shape[0]), token_start=first_context * length,
                         files={"tokens": entry}, stats={})
    write_json_atomic(root / record_file(STAGE, index), record)


def tokenize(config: DumpConfig, tokenizer: Any, stop: threading.Event,
             written: Callable[[], None] = lambda: None) -> TokenIndex:
    """Pack the corpus into contexts and write them shard by shard (resuming: complete shards are kept).

    ``written`` is called after each shard and after the index (rank 0's own extraction waits on it, not on a poll).
    """
    root, spec = config.output, config.spec
    if (index := read_index(root)) is not None:
        return index
    length, per_shard = spec.context_length, config.contexts_per_shard
    max_contexts = None
    if spec.dataset.max_tokens is not None:
        max_contexts = spec.dataset.max_tokens // length
        if max_contexts == 0:
            raise CorpusError(f"dataset.maxTokens {spec.dataset.max_tokens} is less than one context ({length})")
    packing = packing_for(tokenizer)
    documents = iter_documents(config.dataset, spec.dataset.format, spec.dataset.text_field)
    ids: list[np.ndarray] = []
    docs: list[np.ndarray] = []
    shards = contexts = last_document = 0
    for context_ids, context_docs in pack_contexts(documents, tokenizer, length, packing=packing,
                                                   max_contexts=max_contexts):
        if stop.is_set():
            raise InterruptedError("tokenisation stopped")
        ids.append(context_ids)
        docs.append(context_docs)
        contexts += 1
        last_document = int(context_docs[-1])
        if len(ids) == per_shard:
            _write_token_shard(root, shards, contexts - per_shard, ids, docs)
            shards, ids, docs = shards + 1, [], []
            written()
    if ids:
        _write_token_shard(root, shards, contexts - len(ids), ids, docs)
        shards += 1
    if contexts == 0:
        raise CorpusError(f"{config.dataset}: the corpus has fewer tokens than one context ({length})")
    index = TokenIndex(shards=shards, contexts=contexts, tokens=contexts * length, documents=last_document + 1,
                       prepend_bos=packing.prepend_bos)
    write_json_atomic(root / INDEX, index)
    written()
    _log.info("tokenised", shards=shards, contexts=contexts, tokens=index.tokens, documents=index.documents)
    return index


class TokenSource:
    """Where a rank learns which token shards exist: rank 0's tokeniser writes them, every rank polls for them."""

    def __init__(self, root: Path, failed: Callable[[], BaseException | None] = lambda: None):
        self.root = root
        self._failed = failed
        self._written = threading.Event()
        self.index: TokenIndex | None = read_index(root)

    def notify(self) -> None:
        """A token shard or the index was just written (by this process's tokeniser): stop waiting now."""
        self._written.set()

    def refresh(self) -> TokenIndex | None:
        if self.index is None:
            self.index = read_index(self.root)
        return self.index

    def wait(self, shard: int) -> ShardRecord | None:
        """Shard ``shard``'s record once it is written; None when the corpus ends before it."""
        waited = time.monotonic()
        while True:
            if (error := self._failed()) is not None:
                raise error
            record = completed_record(self.root, STAGE, shard, check_files=False)
            if record is not None:
                return record
            if (index := self.refresh()) is not None and shard >= index.shards:
                return None
            if time.monotonic() - waited > 60:
                _log.info("waiting for token shard", shard=shard)
                waited = time.monotonic()
            if self._written.wait(POLL_S):  # other ranks' writes are seen by polling
                self._written.clear()

    def read(self, record: ShardRecord, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, document ids) of a token shard, as [contexts, context_length], verified against the record."""
        entry = record.files["tokens"]
        verify_file(self.root, entry)
        shard = ShardFile(self.root / entry.path)
        ids = shard.rows("token_ids").view(-1, context_length)
        return ids, shard.rows("document_ids").view(-1, context_length)
