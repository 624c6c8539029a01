"""The activation store's files, records and verification, against safetensors, hashlib and plain torch."""

from __future__ import annotations

import hashlib
import json
import os
import random
import runpy
import struct
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from interp_workloads.store import (
    FileEntry,
    HookStats,
    ModelInfo,
    RunningStats,
    ShardFile,
    ShardRecord,
    ShuffleInfo,
    StoreError,
    StoreManifest,
    TokenizerInfo,
    UnknownHookError,
    build_manifest,
    hook_dirname,
    load_manifest,
    load_records,
    record_file,
    sha256_file,
    shard_file,
    shard_name,
    verify_file,
    verify_store,
    write_json_atomic,
    write_safetensors_atomic,
)
from interp_workloads.store.__main__ import main as store_cli
from interp_workloads.store.synthetic import write_synthetic_store

GEN = torch.Generator().manual_seed(0)
HOOKS = {"resid_post.0": 4, "mlp_out.1": 3}


def _tensor(dtype: torch.dtype, shape: tuple[int, ...] = (6, 5)) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.randn(shape, generator=GEN).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=GEN).bool()
    return torch.randint(-100 if dtype.is_signed else 0, 100, shape, generator=GEN).to(dtype)


def _flip_byte(path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


# --- write_safetensors_atomic ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64,
                                   torch.float64, torch.int16, torch.int8, torch.uint8, torch.bool])
def test_safetensors_round_trip_matches_the_reference_loader(tmp_path, dtype):
    tensors = {
        "activations": _tensor(dtype),
        "transposed": _tensor(dtype, (5, 3)).t(),  # non-contiguous
        "vector": _tensor(dtype, (7,)),
        "scalar": _tensor(dtype, ()),
        "empty": _tensor(dtype, (0, 4)),
        "token_ids": torch.arange(6, dtype=torch.int32),
    }
    metadata = {"format": "interp-activation-shard/v1", "hook": "resid_post.3", "shard": "12"}
    entry = write_safetensors_atomic(tmp_path, "shards/resid_post.3/shard-000012.safetensors", tensors, metadata)

    path = tmp_path / "shards/resid_post.3/shard-000012.safetensors"
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor), name
    with safe_open(path, framework="pt") as reader:
        assert reader.metadata() == metadata
    assert entry == FileEntry(path="shards/resid_post.3/shard-000012.safetensors", bytes=path.stat().st_size,
                              sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert (8 + struct.unpack("<Q", path.read_bytes()[:8])[0]) % 8 == 0
    assert os.listdir(path.parent) == [path.name]


def test_safetensors_without_metadata_and_replacing_a_file(tmp_path):
    write_safetensors_atomic(tmp_path, "a.safetensors", {"x": torch.ones(3)})
    entry = write_safetensors_atomic(tmp_path, "a.safetensors", {"x": torch.zeros(2, 2)})
    assert torch.equal(load_file(tmp_path / "a.safetensors")["x"], torch.zeros(2, 2))
    assert entry.sha256 == sha256_file(tmp_path / "a.safetensors")
    with safe_open(tmp_path / "a.safetensors", framework="pt") as reader:
        assert reader.metadata() is None


def test_a_crash_before_the_rename_leaves_no_visible_file(tmp_path, monkeypatch):
    old = write_safetensors_atomic(tmp_path, "kept.safetensors", {"x": torch.ones(4)})

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_safetensors_atomic(tmp_path, "sub/new.safetensors", {"x": torch.ones(4)})
    with pytest.raises(OSError, match="simulated crash"):
        write_safetensors_atomic(tmp_path, "kept.safetensors", {"x": torch.zeros(9)})
    with pytest.raises(OSError, match="simulated crash"):
        write_json_atomic(tmp_path / "manifest.json", {"a": 1})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["kept.safetensors", "sub"]
    verify_file(tmp_path, old)  # the previous version is intact


@pytest.mark.parametrize(("relpath", "tensors", "metadata"), [
    ("../escape.safetensors", {"x": torch.ones(1)}, None),
    ("/abs.safetensors", {"x": torch.ones(1)}, None),
    ("a//b.safetensors", {"x": torch.ones(1)}, None),
    ("ok.safetensors", {"__metadata__": torch.ones(1)}, None),
    ("ok.safetensors", {"x": torch.ones(1, dtype=torch.complex64)}, None),
    ("ok.safetensors", {"x": torch.ones(1)}, {"shard": 3}),
])
def test_safetensors_writer_refuses_what_it_cannot_store(tmp_path, relpath, tensors, metadata):
    with pytest.raises((TypeError, ValueError)):
        write_safetensors_atomic(tmp_path, relpath, tensors, metadata)
    assert not list(tmp_path.rglob("*.safetensors"))


def test_json_written_atomically_from_models_and_values(tmp_path):
    record = ShardRecord(index=2, tokens=0, token_start=5, files={}, stats={})
    write_json_atomic(tmp_path / "shards" / "shard-000002.json", record)
    write_json_atomic(tmp_path / "plain.json", {"a": [1, 2]})
    assert ShardRecord.model_validate_json((tmp_path / "shards/shard-000002.json").read_text()) == record
    assert json.loads((tmp_path / "plain.json").read_text()) == {"a": [1, 2]}
    assert sorted(os.listdir(tmp_path / "shards")) == ["shard-000002.json"]


def test_sha256_file_in_chunks(tmp_path):
    data = random.Random(0).randbytes(1000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=7) == sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


# --- ShardFile ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32])
def test_shard_file_rows_equal_full_tensor_indexing(tmp_path, dtype):
    full = _tensor(dtype, (50, 6))
    ids = _tensor(torch.int64, (50,))
    write_safetensors_atomic(tmp_path, "s.safetensors", {"ids": ids, "activations": full}, {"hook": "h"})
    shard = ShardFile(tmp_path / "s.safetensors")
    assert shard.names == ["ids", "activations"]
    assert shard.metadata == {"hook": "h"}
    assert shard.shape("activations") == (50, 6)
    assert shard.dtype("activations") == dtype
    index = torch.randint(0, 50, (40,), generator=GEN)  # any order, with repeats
    for selection, expected in [(index, full[index]), (None, full), (slice(7, 19), full[7:19]),
                                (torch.tensor([], dtype=torch.int64), full[:0]),
                                (index.to(torch.int32), full[index])]:
        rows = shard.rows("activations", selection)
        assert rows.dtype == dtype
        assert torch.equal(rows, expected)
    assert torch.equal(shard.rows("ids", index), ids[index])
    copy = shard.rows("activations", slice(0, 2))
    copy.zero_()  # a fresh tensor: the file is untouched
    assert torch.equal(shard.rows("activations", slice(0, 2)), full[:2])


def test_shard_file_reads_files_of_the_reference_writer(tmp_path):
    tensors = {"b": _tensor(torch.int32, (3,)), "a": _tensor(torch.bfloat16, (4, 2)), "c": _tensor(torch.float64, (2,))}
    save_file(tensors, tmp_path / "ref.safetensors", metadata={"k": "v"})
    shard = ShardFile(tmp_path / "ref.safetensors")
    assert sorted(shard.names) == ["a", "b", "c"] and shard.metadata == {"k": "v"}
    for name, tensor in tensors.items():
        assert torch.equal(shard.rows(name), tensor)


def test_shard_file_rejects_bad_indices_and_names(tmp_path):
    write_safetensors_atomic(tmp_path, "s.safetensors", {"x": torch.zeros(4, 2), "s": torch.tensor(1.0)})
    shard = ShardFile(tmp_path / "s.safetensors")
    with pytest.raises(IndexError):
        shard.rows("x", torch.tensor([4]))
    with pytest.raises(IndexError):
        shard.rows("x", torch.tensor([-1]))
    with pytest.raises(TypeError):
        shard.rows("x", torch.tensor([0.0]))
    with pytest.raises(StoreError, match="no tensor 'y'"):
        shard.rows("y")
    with pytest.raises(StoreError, match="scalar"):
        shard.rows("s")


def _valid_file(tmp_path) -> bytes:
    write_safetensors_atomic(tmp_path, "v.safetensors", {"a": torch.ones(4, 2), "b": torch.arange(3)})
    return (tmp_path / "v.safetensors").read_bytes()


def _with_header(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize(("corrupt", "problem"), [
    (lambda raw: raw[:-1], "truncated"),
    (lambda raw: raw[:40], "does not fit|truncated"),
    (lambda raw: raw[:5], "shorter than"),
    (lambda raw: b"", "shorter than"),
    (lambda raw: struct.pack("<Q", 1 << 40) + raw[8:], "does not fit"),
    (lambda raw: raw[:8] + b"\xff" + raw[9:], "not JSON"),
    (lambda raw: _with_header([1, 2]), "not a JSON object"),
    (lambda raw: _with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 8), "bytes for"),
    (lambda raw: _with_header({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4), "dtype"),
    (lambda raw: _with_header({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
    (lambda raw: _with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4), "offsets"),
    (lambda raw: _with_header({"__metadata__": {"a": 1}}), "__metadata__"),
])
def test_corrupt_or_truncated_files_raise_store_error(tmp_path, corrupt, problem):
    (tmp_path / "bad.safetensors").write_bytes(corrupt(_valid_file(tmp_path)))
    with pytest.raises(StoreError, match=problem) as err:
        ShardFile(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(err.value)


def test_a_missing_shard_file_raises_store_error(tmp_path):
    with pytest.raises(StoreError, match=r"nope\.safetensors"):
        ShardFile(tmp_path / "nope.safetensors")


# --- verify_file / verify_store -------------------------------------------------------------------------------------


def test_verify_file_detects_flips_size_changes_and_missing_files(tmp_path):
    entry = write_safetensors_atomic(tmp_path, "d/f.safetensors", {"x": torch.arange(100)})
    verify_file(tmp_path, entry)
    path = tmp_path / "d/f.safetensors"
    _flip_byte(path, at=200)
    with pytest.raises(StoreError, match=r"f\.safetensors: sha256 .* corrupt"):
        verify_file(tmp_path, entry)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(StoreError, match=f"{entry.bytes + 1} bytes, expected {entry.bytes}"):
        verify_file(tmp_path, entry)
    path.unlink()
    with pytest.raises(StoreError, match=r"f\.safetensors: missing"):
        verify_file(tmp_path, entry)


@pytest.fixture
def store(tmp_path):
    write_synthetic_store(tmp_path, [5, 3, 6], HOOKS, gradients=True)
    return tmp_path


def _file(root, hook: str, index: int):
    return root / shard_file("shards", hook, index)


def test_verify_store_accepts_a_good_store(store):
    manifest = verify_store(store, workers=2)
    assert manifest == load_manifest(store)
    assert manifest.tokens == 14 and [h.name for h in manifest.hooks] == list(HOOKS)


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda root: _flip_byte(_file(root, "mlp_out.1", 1)), r"mlp_out\.1/shard-000001\.safetensors: sha256"),
    (lambda root: _file(root, "resid_post.0", 2).unlink(), r"resid_post\.0/shard-000002\.safetensors: missing"),
    (lambda root: _file(root, "resid_post.0", 0).write_bytes(_file(root, "resid_post.0", 0).read_bytes()[:-3]),
     "bytes, expected"),
    (lambda root: (root / "manifest.json").unlink(), "not a complete store: manifest.json missing"),
    (lambda root: (root / "manifest.json").write_text("{}"), "invalid StoreManifest"),
])
def test_verify_store_finds_damage(store, damage, problem):
    damage(store)
    with pytest.raises(StoreError, match=problem):
        verify_store(store)


def test_verify_store_lists_several_problems(store):
    for index in range(3):
        _flip_byte(_file(store, "mlp_out.1", index))
    with pytest.raises(StoreError, match="3 problem") as err:
        verify_store(store)
    assert all(f"shard-00000{i}" in str(err.value) for i in range(3))


def test_verify_store_checks_headers_against_the_manifest(store):
    # A file with a matching checksum but the wrong contents: as if the dump wrote a wrong width.
    manifest = load_manifest(store)
    relpath = shard_file("shards", "mlp_out.1", 1)
    entry = write_safetensors_atomic(store, relpath, {
        "activations": torch.zeros(3, 5), "token_ids": torch.zeros(3, dtype=torch.int32),
        "positions": torch.zeros(3, dtype=torch.int32)}, {"format": "other"})
    shards = [s.model_copy(update={"files": {**s.files, "mlp_out.1": entry}}) if s.index == 1 else s
              for s in manifest.shards]
    bytes_ = sum(f.bytes for s in shards for f in s.files.values())
    write_json_atomic(store / "manifest.json", manifest.model_copy(update={"shards": shards, "bytes": bytes_}))
    with pytest.raises(StoreError) as err:
        verify_store(store)
    message = str(err.value)
    assert "activations is torch.float32 [3, 5], the manifest says torch.float32 [3, 3]" in message
    assert "no tensor 'document_ids'" in message and "no tensor 'gradients'" in message and "metadata" in message


def test_cli_verify(store, capsys):
    assert store_cli(["verify", str(store)]) == 0
    assert "ok: 14 tokens in 3 shards, hooks resid_post.0, mlp_out.1" in capsys.readouterr().out
    _flip_byte(_file(store, "resid_post.0", 0))
    assert store_cli(["verify", str(store), "--workers", "1"]) == 1
    assert "sha256" in capsys.readouterr().err


def test_cli_runs_as_a_module(store, monkeypatch, capsys):
    _flip_byte(_file(store, "resid_post.0", 0))
    monkeypatch.setattr(sys, "argv", ["interp_workloads.store", "verify", str(store)])
    monkeypatch.delitem(sys.modules, "interp_workloads.store.__main__")  # imported above; run it afresh
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("interp_workloads.store", run_name="__main__")
    assert exit_.value.code == 1 and "corrupt" in capsys.readouterr().err


# --- layout and records ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("hook", "dirname"), [
    ("resid_post.3", "resid_post.3"), ("mlp_out.0", "mlp_out.0"), ("embed", "embed"),
    ("transformer.h.0.mlp", "transformer.h.0.mlp"), ("model/layers[0]:attn out", "model_layers_0__attn_out"),
    ("a-b_c.D9", "a-b_c.D9"),
])
def test_hook_dirname(hook, dirname):
    assert hook_dirname(hook) == dirname


def test_paths():
    assert shard_name(12) == "shard-000012"
    assert shard_file("shards", "resid_post.3", 12) == "shards/resid_post.3/shard-000012.safetensors"
    assert shard_file("raw", "a/b", 0) == "raw/a_b/shard-000000.safetensors"
    assert record_file("shards", 12) == "shards/shard-000012.json"
    assert record_file("tokens", 3) == "tokens/shard-000003.json"


@pytest.mark.parametrize("path", ["../x", "/abs/x", "a//b", "./a", "a\\b", "", ".", "a/../b"])
def test_file_entries_stay_inside_the_store(path):
    with pytest.raises(ValidationError):
        FileEntry(path=path, bytes=1, sha256="0" * 64)


def test_running_stats_match_torch():
    x = torch.randn(37, 8, generator=GEN) * 3
    norms = x.double().norm(dim=1)
    stats = RunningStats.of(x)
    assert stats.count == 37
    assert stats.sum_norm == pytest.approx(norms.sum().item(), rel=1e-6)
    assert stats.sum_sq_norm == pytest.approx((norms**2).sum().item(), rel=1e-6)
    assert stats.max_norm == pytest.approx(norms.max().item(), rel=1e-6)
    assert RunningStats.of(x) == stats  # deterministic
    hook = HookStats.from_running(stats)
    assert hook.mean_norm == pytest.approx(norms.mean().item(), rel=1e-6)
    assert hook.rms_norm == pytest.approx(norms.pow(2).mean().sqrt().item(), rel=1e-6)
    assert hook.max_norm == stats.max_norm and hook.count == 37
    merged = RunningStats.of(x[:10]).merge(RunningStats.of(x[10:]))
    assert merged.count == 37 and merged.max_norm == stats.max_norm
    assert merged.sum_norm == pytest.approx(stats.sum_norm, rel=1e-12)
    per_token = torch.randn(5, 2, 3, generator=GEN)  # [n, heads, head_dim] flattens per row
    assert RunningStats.of(per_token) == RunningStats.of(per_token.reshape(5, 6))
    assert RunningStats.of(x.bfloat16()).sum_norm == pytest.approx(x.bfloat16().double().norm(dim=1).sum().item())
    assert RunningStats.of(torch.zeros(0, 8)) == RunningStats()
    assert HookStats.from_running(RunningStats()) == HookStats(count=0, mean_norm=0, rms_norm=0, max_norm=0)


def _record(index: int, tokens: int, hooks=HOOKS, seed: int = 0) -> tuple[ShardRecord, dict[str, torch.Tensor]]:
    data = {hook: torch.randn(tokens, d, generator=torch.Generator().manual_seed(seed * 100 + index))
            for hook, d in hooks.items()}
    files = {hook: FileEntry(path=shard_file("shards", hook, index), bytes=100 + index,
                             sha256=hashlib.sha256(f"{hook}{index}".encode()).hexdigest()) for hook in hooks}
    return ShardRecord(index=index, tokens=tokens, token_start=999, files=files,
                       stats={hook: RunningStats.of(x) for hook, x in data.items()}), data


FIELDS = {
    "model": ModelInfo(id="gpt2", dtype="float32"),
    "tokenizer": TokenizerInfo(name_or_path="gpt2", vocab_size=50257),
    "context_length": 8,
    "prepend_bos": True,
    "dtype": "float32",
    "contexts": 3,
    "documents": 2,
    "shuffle": ShuffleInfo(enabled=False, seed=0),
    "config": {"k": "v"},
    "created_at": "2025-01-01T00:00:00+00:00",
}
HOOK_SPECS = [("resid_post.0", [4], "float32", False), ("mlp_out.1", [3], "float32", False)]


def test_build_manifest_does_not_depend_on_record_order():
    made = [_record(index, tokens) for index, tokens in enumerate([7, 1, 12, 4, 9])]
    records = [record for record, _ in made]
    manifest = build_manifest(records, hooks=HOOK_SPECS, **FIELDS)
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        assert build_manifest(shuffled, hooks=HOOK_SPECS, **FIELDS).model_dump_json() == manifest.model_dump_json()
    assert [(s.index, s.token_start, s.tokens) for s in manifest.shards] == [
        (0, 0, 7), (1, 7, 1), (2, 8, 12), (3, 20, 4), (4, 24, 9)]
    assert manifest.tokens == 33
    assert manifest.bytes == sum(100 + i for i in range(5)) * 2
    for hook, d in HOOKS.items():
        norms = torch.cat([data[hook] for _, data in made]).double().norm(dim=1)
        info = manifest.hook(hook)
        assert (info.d, info.shape, info.gradients, info.grad_stats) == (d, [d], False, None)
        assert info.stats.count == 33
        assert info.stats.mean_norm == pytest.approx(norms.mean().item(), rel=1e-6)
        assert info.stats.rms_norm == pytest.approx(norms.pow(2).mean().sqrt().item(), rel=1e-6)
        assert info.stats.max_norm == pytest.approx(norms.max().item(), rel=1e-6)
    assert StoreManifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_build_manifest_merges_gradient_stats_and_refuses_computed_fields():
    record, _ = _record(0, 5, {"h": 2})
    with_grads = record.model_copy(update={"grad_stats": {"h": RunningStats.of(torch.ones(5, 2))}})
    manifest = build_manifest([with_grads], hooks=[("h", [2], "bfloat16", True)], **FIELDS)
    grad_stats = manifest.hook("h").grad_stats
    assert grad_stats is not None and grad_stats.count == 5
    assert [grad_stats.mean_norm, grad_stats.rms_norm, grad_stats.max_norm] == pytest.approx([2**0.5] * 3)
    with pytest.raises(ValueError, match="no gradient stats"):
        build_manifest([record], hooks=[("h", [2], "float32", True)], **FIELDS)
    with pytest.raises(TypeError, match="tokens"):
        build_manifest([record], hooks=[("h", [2], "float32", False)], tokens=5, **FIELDS)
    with pytest.raises(ValueError, match="shard 0 has no stats for hook 'other'"):
        build_manifest([record], hooks=[("other", [2], "float32", False)], **FIELDS)


def _manifest_json() -> dict:
    records = [_record(index, tokens)[0] for index, tokens in enumerate([3, 4, 5])]
    return build_manifest(records, hooks=HOOK_SPECS, **FIELDS).model_dump(mode="json")


def _drop_file(m):
    del m["shards"][1]["files"]["mlp_out.1"]


@pytest.mark.parametrize(("change", "problem"), [
    (lambda m: m["shards"][1].update(token_start=4), "starts at token 4, expected 3"),
    (lambda m: m["shards"][2].update(tokens=6), "hold 13 tokens, the manifest says 12"),
    (lambda m: m.update(tokens=13), "hold 12 tokens, the manifest says 13"),
    (lambda m: m["shards"][1].update(index=5), "entry 1 has index 5"),
    (lambda m: m["shards"].reverse(), "entry 0 has index 2"),
    (_drop_file, r"shard 1 has no file for hooks \['mlp_out.1'\]"),
    (lambda m: m["shards"][0]["files"].update(extra=m["shards"][0]["files"]["mlp_out.1"]), "unknown hooks"),
    (lambda m: m.update(bytes=1), "the manifest says 1"),
    (lambda m: m.update(format="interp-activation-store/v2"), "format"),
    (lambda m: m.update(surprise=1), "surprise"),
    (lambda m: m.update(hooks=[]), "at least one hook"),
    (lambda m: m["hooks"].append(m["hooks"][0]), "repeat"),
    (lambda m: m["hooks"][0].update(dtype="int8"), "dtype"),
    (lambda m: m["hooks"][0].update(d=5), "does not flatten to d=5"),
])
def test_manifest_validation_rejects_inconsistencies(change, problem):
    data = _manifest_json()
    StoreManifest.model_validate(data)
    change(data)
    with pytest.raises(ValidationError, match=problem):
        StoreManifest.model_validate(data)


def test_unknown_hook_lists_the_hooks():
    manifest = StoreManifest.model_validate(_manifest_json())
    with pytest.raises(UnknownHookError, match=r"no hook 'resid_post\.9'; it has: resid_post\.0, mlp_out\.1") as err:
        manifest.hook("resid_post.9")
    assert isinstance(err.value, StoreError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize(("update", "problem"), [
    ({"stats": {"other": RunningStats(count=4)}}, r"shard 0: stats for hooks without files: \['other'\]"),
    ({"grad_stats": {"other": RunningStats(count=4)}}, r"gradient stats for hooks without files: \['other'\]"),
    ({"tokens": 5}, "count 4 rows"),
])
def test_shard_record_validation(update, problem):
    record, _ = _record(0, 4)
    with pytest.raises(ValidationError, match=problem):
        ShardRecord.model_validate({**record.model_dump(), **update})


def test_records_of_other_stages_have_files_without_stats():
    entry = FileEntry(path="tokens/shard-000000.safetensors", bytes=10, sha256="a" * 64)
    record = ShardRecord(index=0, tokens=4, token_start=0, files={"tokens": entry}, stats={})
    assert ShardRecord.model_validate_json(record.model_dump_json()) == record


def test_load_records_reads_the_sidecars_only(tmp_path):
    records = {index: _record(index, 3)[0] for index in (0, 2)}
    for index, record in records.items():
        write_json_atomic(tmp_path / record_file("raw", index), record)
    (tmp_path / "raw" / ".shard-000001.json.tmp-99").write_text("partial")
    assert load_records(tmp_path, "raw") == records
    assert load_records(tmp_path, "shards") == {}
    (tmp_path / record_file("raw", 1)).write_text(records[0].model_dump_json())
    with pytest.raises(StoreError, match="holds the record of shard 0"):
        load_records(tmp_path, "raw")
    (tmp_path / record_file("raw", 1)).write_text("{")
    with pytest.raises(StoreError, match=r"shard-000001\.json: invalid ShardRecord"):
        load_records(tmp_path, "raw")


def test_the_manifest_models_import_no_torch(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
        "from interp_workloads.store import StoreManifest, build_manifest, load_manifest, ShardRecord, shard_file\n"
        "import interp_workloads.store.manifest\n"
        "print(shard_file('shards', 'h', 1))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONSAFEPATH": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "shards/h/shard-000001.safetensors"
