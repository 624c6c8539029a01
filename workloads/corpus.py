"""Documents from files on disk, tokenised and packed into fixed-length contexts.

:func:`iter_documents` streams documents from plain text, JSON lines (optionally gzipped) or parquet files;
:func:`pack_contexts` tokenises them in batches and cuts one concatenated token stream into contexts of exactly
``context_length`` tokens, each with the index of the document every token came from. Both are streaming: memory is
bounded by one parquet record batch, one encode batch and one context, whatever the corpus size.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

CorpusFormat = Literal["text", "jsonl", "parquet"]

SUFFIXES: dict[str, tuple[str, ...]] = {
    "text": (".txt", ".md"),
    "jsonl": (".jsonl", ".json", ".jsonl.gz"),
    "parquet": (".parquet",),
}

# Rows per parquet record batch: small enough that a batch of long documents stays a few MiB.
PARQUET_BATCH_ROWS = 1024


class CorpusError(ValueError):
    """The corpus cannot be read: no files, a malformed record, a missing field or column."""


def iter_documents(source: Path, format: CorpusFormat, text_field: str = "text") -> Iterator[str]:
    """Documents of ``source`` (a file, or a directory read recursively in sorted relative-path order).

    The file list is resolved (and a missing source or an empty directory reported) immediately; records are read
    lazily as the iterator is consumed.
    """
    if format not in SUFFIXES:
        raise CorpusError(f"corpus format must be one of {', '.join(SUFFIXES)}; got {format!r}")
    files = _corpus_files(Path(source), format)
    return _read_all(files, format, text_field)


def _corpus_files(source: Path, format: CorpusFormat) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise CorpusError(f"corpus source {source} does not exist")
    suffixes = SUFFIXES[format]
    found = [
        path for path in source.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(source).parts)
        and path.name.endswith(suffixes)
    ]
    if not found:
        raise CorpusError(f"no {format} files ({', '.join(suffixes)}) under {source}")
    return sorted(found, key=lambda path: path.relative_to(source).parts)


def _read_all(files: list[Path], format: CorpusFormat, text_field: str) -> Iterator[str]:
    for path in files:
        if format == "text":
            yield from _text_documents(path)
        elif format == "jsonl":
            yield from _jsonl_documents(path, text_field)
        else:
            yield from _parquet_documents(path, text_field)


def _text_documents(path: Path) -> Iterator[str]:
    block: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                block.append(line)
                continue
            if block:
                yield "".join(block).strip()
                block = []
    if block:
        yield "".join(block).strip()


def _open_text(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record: Any = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{where}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if text_field not in record:
                raise CorpusError(f"{where}: no field {text_field!r} (fields: {', '.join(sorted(record))})")
            text = record[text_field]
            if not isinstance(text, str):
                raise CorpusError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
            yield text


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    if text_field not in schema.names:
        raise CorpusError(f"{path}: no column {text_field!r} (columns: {', '.join(schema.names)})")
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise CorpusError(f"{path}: column {text_field!r} is {column_type}, not a string column")
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield text


@dataclass(frozen=True)
class Packing:
    """How documents are joined: a BOS at the start of every context, a separator token after every document."""

    prepend_bos: bool
    bos_token_id: int | None
    separator_token_id: int | None


def packing_for(tokenizer: Any) -> Packing:
    """BOS as the model expects: prepend it when the tokenizer has one; separate documents by EOS, else BOS."""
    bos = tokenizer.bos_token_id
    eos = tokenizer.eos_token_id
    return Packing(prepend_bos=bos is not None, bos_token_id=bos, separator_token_id=eos if eos is not None else bos)


def pack_contexts(
    documents: Iterable[str],
    tokenizer: Any,
    context_length: int,
    *,
    packing: Packing | None = None,
    max_contexts: int | None = None,
    encode_batch: int = 256,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(token_ids int32 [L], document_ids int64 [L])`` for consecutive contexts of the packed stream.

    The stream is every document's tokens followed by the separator (if any). A context is BOS plus the next L-1
    stream tokens when ``packing.prepend_bos``, else the next L stream tokens; the last, incomplete one is dropped.
    ``document_ids`` holds each token's document index in ``documents`` order (a document that encodes to no tokens
    keeps its index but contributes nothing; the separator belongs to the document it ends; the BOS takes the id of
    the token after it).
    """
    packing = packing or packing_for(tokenizer)
    _check_arguments(packing, context_length, max_contexts, encode_batch)
    return _pack(iter(documents), tokenizer, context_length, packing, max_contexts, encode_batch)


def _check_arguments(packing: Packing, context_length: int, max_contexts: int | None, encode_batch: int) -> None:
    if packing.prepend_bos and packing.bos_token_id is None:
        raise ValueError("prepend_bos needs a bos_token_id")
    minimum = 2 if packing.prepend_bos else 1
    if context_length < minimum:
        raise ValueError(f"context_length must be at least {minimum}, got {context_length}")
    if max_contexts is not None and max_contexts < 0:
        raise ValueError(f"max_contexts must be >= 0, got {max_contexts}")
    if encode_batch < 1:
        raise ValueError(f"encode_batch must be >= 1, got {encode_batch}")


def _pack(documents: Iterator[str], tokenizer: Any, context_length: int, packing: Packing,
          max_contexts: int | None, encode_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    per_context = context_length - 1 if packing.prepend_bos else context_length
    tokens = np.empty(0, dtype=np.int32)
    doc_ids = np.empty(0, dtype=np.int64)
    emitted = 0
    first_index = 0
    while max_contexts is None or emitted < max_contexts:
        texts = list(islice(documents, encode_batch))
        if not texts:
            return
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        batch_tokens, batch_ids = _stream_of(encoded, first_index, packing.separator_token_id)
        first_index += len(texts)
        tokens = np.concatenate([tokens, batch_tokens])
        doc_ids = np.concatenate([doc_ids, batch_ids])
        start = 0
        while len(tokens) - start >= per_context and (max_contexts is None or emitted < max_contexts):
            context_tokens = tokens[start:start + per_context]
            context_ids = doc_ids[start:start + per_context]
            if packing.prepend_bos:
                yield (np.concatenate([np.array([packing.bos_token_id], np.int32), context_tokens]),
                       np.concatenate([context_ids[:1], context_ids]))
            else:
                yield context_tokens.copy(), context_ids.copy()
            emitted += 1
            start += per_context
        tokens, doc_ids = tokens[start:].copy(), doc_ids[start:].copy()


def _stream_of(encoded: list[list[int]], first_index: int, separator: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One batch's stream: each non-empty document's tokens then the separator, with their document indices."""
    token_pieces: list[np.ndarray] = []
    id_pieces: list[np.ndarray] = []
    for offset, ids in enumerate(encoded):
        if not ids:
            continue
        piece = np.asarray(ids if separator is None else [*ids, separator], dtype=np.int32)
        token_pieces.append(piece)
        id_pieces.append(np.full(len(piece), first_index + offset, dtype=np.int64))
    if not token_pieces:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64)
    return np.concatenate(token_pieces), np.concatenate(id_pieces)
