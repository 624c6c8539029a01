"""Corpus readers and context packing, checked against a one-document-at-a-time reference packer."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interp_workloads.corpus import CorpusError, Packing, iter_documents, pack_contexts, packing_for
from interp_workloads.testing import CORPUS, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def no_bos_tokenizer():
    tok = build_tokenizer()
    tok.bos_token = None
    return tok


def make_documents(seed: int) -> list[str]:
    """Long documents (several contexts each), many short ones, and some that encode to nothing."""
    rng = random.Random(seed)
    words = CORPUS.split()
    docs = []
    for _ in range(40):
        kind = rng.random()
        if kind < 0.15:
            docs.append("")
        elif kind < 0.35:
            docs.append(" ".join(rng.choices(words, k=rng.randint(60, 150))))
        else:
            docs.append(" ".join(rng.choices(words, k=rng.randint(1, 6))))
    return docs


def reference_contexts(docs, tokenizer, context_length, packing, max_contexts=None):
    stream: list[int] = []
    owners: list[int] = []
    for index, doc in enumerate(docs):
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        if packing.separator_token_id is not None:
            ids = [*ids, packing.separator_token_id]
        stream += ids
        owners += [index] * len(ids)
    per = context_length - 1 if packing.prepend_bos else context_length
    contexts = []
    for c in range(len(stream) // per):
        tokens, ids = stream[c * per:(c + 1) * per], owners[c * per:(c + 1) * per]
        if packing.prepend_bos:
            tokens, ids = [packing.bos_token_id, *tokens], [ids[0], *ids]
        contexts.append((tokens, ids))
    return contexts if max_contexts is None else contexts[:max_contexts]


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    for (tokens, ids), (want_tokens, want_ids) in zip(actual, expected, strict=True):
        assert tokens.dtype == np.int32 and ids.dtype == np.int64
        assert tokens.tolist() == want_tokens
        assert ids.tolist() == want_ids


@pytest.mark.parametrize(("context_length", "encode_batch", "seed"), [
    (2, 256, 0), (3, 1, 1), (7, 3, 2), (16, 5, 3), (64, 256, 4), (200, 7, 5),
])
def test_packing_matches_the_reference(tokenizer, context_length, encode_batch, seed):
    docs = make_documents(seed)
    packing = packing_for(tokenizer)
    expected = reference_contexts(docs, tokenizer, context_length, packing)
    assert expected, "the corpus must fill at least one context"
    actual = list(pack_contexts(docs, tokenizer, context_length, encode_batch=encode_batch))
    assert_same(actual, expected)
    for tokens, _ in actual:
        assert len(tokens) == context_length and tokens[0] == tokenizer.bos_token_id


@pytest.mark.parametrize("context_length", [1, 5, 33])
def test_packing_without_bos_matches_the_reference(no_bos_tokenizer, context_length):
    docs = make_documents(7)
    packing = packing_for(no_bos_tokenizer)
    assert packing == Packing(prepend_bos=False, bos_token_id=None, separator_token_id=no_bos_tokenizer.eos_token_id)
    actual = list(pack_contexts(docs, no_bos_tokenizer, context_length, encode_batch=4))
    assert_same(actual, reference_contexts(docs, no_bos_tokenizer, context_length, packing))


def test_explicit_packing_without_separator(tokenizer):
    docs = make_documents(8)
    packing = Packing(prepend_bos=True, bos_token_id=tokenizer.bos_token_id, separator_token_id=None)
    actual = list(pack_contexts(docs, tokenizer, 9, packing=packing, encode_batch=6))
    assert_same(actual, reference_contexts(docs, tokenizer, 9, packing))
    assert all(tokenizer.eos_token_id not in tokens for tokens, _ in actual)


@pytest.mark.parametrize("max_contexts", [0, 1, 5, 10_000])
def test_max_contexts(tokenizer, max_contexts):
    docs = make_documents(9)
    packing = packing_for(tokenizer)
    actual = list(pack_contexts(docs, tokenizer, 12, max_contexts=max_contexts, encode_batch=3))
    assert_same(actual, reference_contexts(docs, tokenizer, 12, packing, max_contexts))


def test_document_ids_follow_the_documents(tokenizer):
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    first, last = "The quick brown fox", "lazy dog " * 10
    a = tokenizer(first, add_special_tokens=False)["input_ids"]
    b = tokenizer(last, add_special_tokens=False)["input_ids"]
    assert len(b) > len(a)
    # The empty document keeps index 1; the separator belongs to the document it ends; BOS takes the next token's id.
    contexts = list(pack_contexts([first, "", last], tokenizer, len(a) + 2))
    assert len(contexts) == (len(a) + len(b) + 2) // (len(a) + 1)
    assert contexts[0][0].tolist() == [bos, *a, eos]
    assert contexts[0][1].tolist() == [0] * (len(a) + 2)
    assert contexts[1][0].tolist() == [bos, *b[:len(a) + 1]]
    assert contexts[1][1].tolist() == [2] * (len(a) + 2)


def test_packing_is_streaming(tokenizer):
    pulled = 0

    def endless() -> Iterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield "The quick brown fox jumps over the lazy dog."

    contexts = list(pack_contexts(endless(), tokenizer, 8, max_contexts=3, encode_batch=4))
    assert len(contexts) == 3
    assert pulled <= 4  # one encode batch holds enough tokens for three contexts of 7 stream tokens


@pytest.mark.parametrize(("bos", "eos", "expected"), [
    (5, 6, Packing(True, 5, 6)),
    (5, None, Packing(True, 5, 5)),
    (None, 6, Packing(False, None, 6)),
    (None, None, Packing(False, None, None)),
])
def test_packing_for(bos, eos, expected):
    assert packing_for(SimpleNamespace(bos_token_id=bos, eos_token_id=eos)) == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"context_length": 1}, "at least 2"),
    ({"context_length": 8, "max_contexts": -1}, "max_contexts"),
    ({"context_length": 8, "encode_batch": 0}, "encode_batch"),
    ({"context_length": 8, "packing": Packing(True, None, 1)}, "bos_token_id"),
])
def test_invalid_packing_arguments(tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pack_contexts(["x"], tokenizer, **kwargs)


def test_text_blocks(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n  first block\nsecond line  \n\n \t \n\n\nsecond\r\n\r\nthird\n", encoding="utf-8")
    assert list(iter_documents(path, "text")) == ["first block\nsecond line", "second", "third"]


def test_directory_order_suffixes_and_hidden_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".git").mkdir()
    files = {
        "b.txt": "b1\n\nb2",
        "a/z.md": "az",
        "a.txt": "a",
        ".hidden.txt": "hidden",
        ".git/x.txt": "in a hidden folder",
        "table.csv": "not text",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert list(iter_documents(tmp_path, "text")) == ["az", "a", "b1", "b2"]


def test_jsonl_plain_gzip_and_json_suffix(tmp_path):
    rows = [{"text": "one", "id": 1}, {"text": "two"}, {"text": ""}, {"body": "x", "text": "three"}]
    lines = "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n   \n"
    (tmp_path / "1.jsonl").write_text(lines)
    with gzip.open(tmp_path / "2.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(rows[2]) + "\n")
    (tmp_path / "3.json").write_text(json.dumps(rows[3]))
    (tmp_path / "4.txt").write_text("ignored")
    assert list(iter_documents(tmp_path, "jsonl")) == ["one", "two", "", "three"]
    assert list(iter_documents(tmp_path / "3.json", "jsonl", text_field="body")) == ["x"]


@pytest.mark.parametrize(("lines", "message"), [
    (['{"text": "ok"}', "", '{"text": broken}'], r"bad\.jsonl:3: not valid JSON"),
    (['["text"]'], r"bad\.jsonl:1: expected a JSON object, got list"),
    (['{"text": "ok"}', '{"body": "x"}'], r"bad\.jsonl:2: no field 'text' \(fields: body\)"),
    (['{"text": 3}'], r"bad\.jsonl:1: field 'text' is int, not a string"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=message):
        list(iter_documents(path, "jsonl"))


def test_parquet_streams_batches_and_skips_nulls(tmp_path):
    texts = [f"document {i}" if i % 7 else None for i in range(2500)]
    pq.write_table(pa.table({"id": list(range(2500)), "content": texts}), tmp_path / "b.parquet", row_group_size=600)
    pq.write_table(pa.table({"content": ["first"]}), tmp_path / "a.parquet")
    docs = list(iter_documents(tmp_path, "parquet", text_field="content"))
    assert docs == ["first", *[t for t in texts if t is not None]]


def test_parquet_column_errors(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": [1, 2], "body": ["a", "b"]}), path)
    with pytest.raises(CorpusError, match=r"no column 'text' \(columns: id, body\)"):
        list(iter_documents(path, "parquet"))
    with pytest.raises(CorpusError, match="not a string column"):
        list(iter_documents(path, "parquet", text_field="id"))


def test_missing_sources(tmp_path):
    with pytest.raises(CorpusError, match="no text files"):
        iter_documents(tmp_path, "text")
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(CorpusError, match=r"no jsonl files \(\.jsonl, \.json, \.jsonl\.gz\)"):
        iter_documents(tmp_path, "jsonl")
    with pytest.raises(CorpusError, match="does not exist"):
        iter_documents(tmp_path / "missing", "text")
    with pytest.raises(CorpusError, match="format must be one of"):
        iter_documents(tmp_path, "csv")  # type: ignore[arg-type]


def test_files_to_contexts(tmp_path, tokenizer):
    docs = make_documents(11)
    with open(tmp_path / "corpus.jsonl", "w") as handle:
        for doc in docs:
            handle.write(json.dumps({"text": doc}) + "\n")
    actual = list(pack_contexts(iter_documents(tmp_path, "jsonl"), tokenizer, 32, encode_batch=8))
    assert_same(actual, reference_contexts(docs, tokenizer, 32, packing_for(tokenizer)))
