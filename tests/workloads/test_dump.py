"""The ActivationDump workload end to end on a tiny model: contents against a plain forward, identical stores for any
number of ranks, the shuffle, crash and resume, gradients, and refusals of bad input."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from dump_support import dump_spec, shard_digests, start_rank, write_config
from safetensors.torch import load_file
from transformers import AutoTokenizer

from interp_workloads.dump.__main__ import main as dump_main
from interp_workloads.dump.config import ConfigError, parse_config
from interp_workloads.dump.run import Dump
from interp_workloads.instrument import attribute, capture
from interp_workloads.spec import Objective
from interp_workloads.store.files import StoreError
from interp_workloads.store.reader import ActivationStore, StoreReader
from interp_workloads.store.verify import verify_store
from interp_workloads.testing import build_tiny_model, write_corpus

LENGTH = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model("gpt2", tmp_path_factory.mktemp("dump-model"), n_layers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("dump-corpus") / "corpus.jsonl", documents=80)


@pytest.fixture(autouse=True)
def single_rank(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "INTERP_STATUS_PORT", "INTERP_PATH_OUTPUT", "INTERP_PATH_MODEL",
                 "INTERP_PATH_DATASET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INTERP_TERMINATION_MESSAGE_PATH", "/nonexistent/termination-log")


def run_dump(spec: dict) -> dict:
    return Dump(parse_config({"spec": spec})).run()


def reference_contexts(model_dir: Path, corpus: Path, contexts: int) -> torch.Tensor:
    """Packing written out plainly: BOS, then the documents joined by EOS, chopped into contexts."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    stream: list[int] = []
    for line in corpus.read_text().splitlines():
        stream += tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    body = LENGTH - 1
    rows = [[tokenizer.bos_token_id, *stream[i * body:(i + 1) * body]] for i in range(contexts)]
    return torch.tensor(rows)


@pytest.fixture(scope="module")
def plain_store(model_dir, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    summary = Dump(parse_config({"spec": dump_spec(model_dir, corpus, out)})).run()
    assert summary["verified"] is True
    return out


@pytest.fixture(scope="module")
def shuffled_store(model_dir, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shuffled")
    Dump(parse_config({"spec": dump_spec(model_dir, corpus, out, shuffle={"enabled": True, "seed": 7})})).run()
    return out


def all_rows(root: Path, hook: str) -> dict[str, torch.Tensor]:
    store = ActivationStore(root)
    parts = [load_file(root / shard.files[hook].path) for shard in store.manifest.shards]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def test_store_holds_exactly_the_plain_forward_activations(plain_store, model_dir, corpus):
    from transformers import AutoModelForCausalLM

    manifest = verify_store(plain_store)
    contexts = manifest.tokens // LENGTH
    ids = reference_contexts(model_dir, corpus, contexts)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
        mlp = capture(model, {"input_ids": ids}, ["mlp_out.1"], stop_early=False)["mlp_out.1"]
    resid = all_rows(plain_store, "resid_post.0")
    assert torch.equal(resid["token_ids"].long(), ids.reshape(-1))
    assert torch.equal(resid["positions"], torch.arange(LENGTH, dtype=torch.int32).repeat(contexts))
    torch.testing.assert_close(resid["activations"], hidden[1].reshape(-1, 32), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(all_rows(plain_store, "mlp_out.1")["activations"], mlp.reshape(-1, 32),
                               rtol=1e-5, atol=1e-5)
    norms = hidden[1].reshape(-1, 32).double().norm(dim=-1)
    stats = manifest.hook("resid_post.0").stats
    assert stats.count == manifest.tokens
    assert stats.mean_norm == pytest.approx(norms.mean().item(), rel=1e-5)
    assert stats.max_norm == pytest.approx(norms.max().item(), rel=1e-5)
    assert [s.tokens for s in manifest.shards][:-1] == [256] * (len(manifest.shards) - 1)
    assert manifest.context_length == LENGTH and manifest.prepend_bos
    assert not (plain_store / "tokens").exists() and not (plain_store / "raw").exists()


def test_document_ids_follow_the_corpus(plain_store):
    resid = all_rows(plain_store, "resid_post.0")
    documents = resid["document_ids"]
    assert documents[0] == 0 and bool((documents.diff() >= 0).all()), "document ids are in corpus order"
    store = ActivationStore(plain_store)
    assert store.manifest.documents == int(documents.max()) + 1


def test_three_ranks_write_the_same_store_as_one(model_dir, corpus, shuffled_store, tmp_path):
    out = tmp_path / "three"
    config = write_config(tmp_path / "cfg.json",
                          dump_spec(model_dir, corpus, out, shuffle={"enabled": True, "seed": 7}))
    ranks = [start_rank(config, rank, 3, tmp_path / f"rank{rank}.log") for rank in range(3)]
    for rank, process in enumerate(ranks):
        assert process.wait(180) == 0, (tmp_path / f"rank{rank}.log").read_text()[-3000:]
    assert shard_digests(out) == shard_digests(shuffled_store)
    one, three = (json.loads((root / "manifest.json").read_text()) for root in (shuffled_store, out))
    for manifest in (one, three):
        manifest.pop("created_at")
        manifest["config"].pop("output")
    assert one == three


def test_shuffle_is_a_seeded_permutation_of_the_plain_store(plain_store, shuffled_store, model_dir, corpus, tmp_path):
    def rows(root: Path) -> list[tuple]:
        data = all_rows(root, "resid_post.0")
        keys = zip(data["token_ids"].tolist(), data["document_ids"].tolist(), data["positions"].tolist(),
                   map(tuple, data["activations"].tolist()), strict=True)
        return list(keys)

    plain, shuffled = rows(plain_store), rows(shuffled_store)
    assert sorted(plain) == sorted(shuffled) and plain != shuffled
    other = tmp_path / "seed8"
    run_dump(dump_spec(model_dir, corpus, other, shuffle={"enabled": True, "seed": 8}))
    assert sorted(rows(other)) == sorted(plain) and rows(other) != shuffled
    mlp = all_rows(shuffled_store, "mlp_out.1")
    assert torch.equal(mlp["token_ids"], all_rows(shuffled_store, "resid_post.0")["token_ids"]), \
        "every hook point's rows are in the same order"


def test_a_write_that_fails_mid_shard_leaves_no_partial_shard_and_resumes(plain_store, model_dir, corpus, tmp_path,
                                                                          monkeypatch):
    import interp_workloads.dump.shards as shards

    real_write = shards.write_safetensors_atomic
    calls = {"n": 0}

    def failing(root, relpath, tensors, metadata=None):
        calls["n"] += 1
        if "shard-000002" in relpath and "mlp_out" in relpath:
            raise OSError("disk full (injected)")
        return real_write(root, relpath, tensors, metadata)

    out = tmp_path / "crashed"
    monkeypatch.setattr(shards, "write_safetensors_atomic", failing)
    with pytest.raises(OSError, match="injected"):
        run_dump(dump_spec(model_dir, corpus, out))
    assert (out / "shards" / "shard-000001.json").exists()
    assert not (out / "shards" / "shard-000002.json").exists(), "a shard without all its files is not complete"
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(shards, "write_safetensors_atomic", real_write)
    # A flipped byte in a complete shard is found on resume and that shard is written again.
    victim = out / "shards" / "resid_post.0" / "shard-000000.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    run_dump(dump_spec(model_dir, corpus, out))
    assert shard_digests(out) == shard_digests(plain_store)
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers


def test_a_killed_rank_resumes_where_it_stopped(plain_store, model_dir, corpus, tmp_path):
    out = tmp_path / "killed"
    config = write_config(tmp_path / "cfg.json", dump_spec(model_dir, corpus, out, batchSize=1))
    process = start_rank(config, 0, 1, tmp_path / "first.log")
    deadline = time.monotonic() + 120
    while not (out / "shards" / "shard-000001.json").exists():
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert not (out / "manifest.json").exists()
    written = {p.name for p in (out / "shards").glob("shard-*.json")}
    resumed = start_rank(config, 0, 1, tmp_path / "second.log")
    assert resumed.wait(120) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert shard_digests(out) == shard_digests(plain_store)
    log = (tmp_path / "second.log").read_text()
    assert log.count('shard already complete') >= len(written), "complete shards are kept, not recomputed"


def test_gradients_are_stored_beside_activations(model_dir, corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "grads"
    run_dump(dump_spec(model_dir, corpus, out, captureGradients=True, dataset={"maxTokens": 512}))
    store = ActivationStore(out)
    assert store.manifest.hook("resid_post.0").gradients and store.manifest.tokens == 512
    shard = load_file(out / store.manifest.shards[0].files["resid_post.0"].path)
    ids = shard["token_ids"].long().view(-1, LENGTH)[:4]
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval().requires_grad_(False)
    expected = attribute(model, {"input_ids": ids}, ["resid_post.0"], Objective(kind="loss"))
    torch.testing.assert_close(shard["gradients"][: 4 * LENGTH], expected.gradients["resid_post.0"].reshape(-1, 32),
                               rtol=1e-5, atol=1e-7)
    assert store.manifest.hook("resid_post.0").grad_stats is not None


def test_a_complete_store_is_verified_not_rewritten(plain_store, model_dir, corpus):
    before = {p: p.stat().st_mtime_ns for p in plain_store.rglob("*.safetensors")}
    summary = run_dump(dump_spec(model_dir, corpus, plain_store))
    assert summary["verified"] and summary["tokens"] == ActivationStore(plain_store).manifest.tokens
    assert before == {p: p.stat().st_mtime_ns for p in plain_store.rglob("*.safetensors")}


def test_reader_streams_the_dumped_store(shuffled_store):
    store = ActivationStore(shuffled_store)
    batches = list(StoreReader(store, ["resid_post.0", "mlp_out.1"], batch_size=64))
    assert len(batches) == store.manifest.tokens // 64
    first = batches[0]
    data = all_rows(shuffled_store, "resid_post.0")
    assert torch.equal(first.activations["resid_post.0"], data["activations"][:64])
    assert torch.equal(first.token_ids, data["token_ids"][:64])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hookPoints": ["resid_post.9"]}, "resid_post.9"),
        ({"dataset": {"maxTokens": 4}}, "less than one context"),
    ],
)
def test_bad_input_exits_3_with_a_message(change, message, model_dir, corpus, tmp_path, capsys):
    config = write_config(tmp_path / "cfg.json", dump_spec(model_dir, corpus, tmp_path / "out", **change))
    assert dump_main(["--config", str(config)]) == 3
    assert message in capsys.readouterr().err


def test_invalid_spec_is_refused_before_any_work(model_dir, corpus, tmp_path):
    with pytest.raises(ConfigError, match="multiple of contextLength"):
        parse_config({"spec": dump_spec(model_dir, corpus, tmp_path / "o", tokensPerShard=300)})
    config = write_config(tmp_path / "cfg.json", dump_spec(model_dir, corpus, tmp_path / "o", tokensPerShard=300))
    assert dump_main(["--config", str(config)]) == 3
    assert not (tmp_path / "o").exists()


def test_output_of_another_configuration_is_never_mixed(plain_store, model_dir, corpus):
    with pytest.raises(ConfigError, match="differs in: hookPoints"):
        run_dump(dump_spec(model_dir, corpus, plain_store, hookPoints=["resid_post.1"]))


def test_corrupt_complete_store_is_reported(model_dir, corpus, tmp_path):
    out = tmp_path / "corrupt"
    run_dump(dump_spec(model_dir, corpus, out, dataset={"maxTokens": 512}))
    victim = next(out.glob("shards/*/shard-000000.safetensors"))
    victim.write_bytes(victim.read_bytes()[:-8])
    with pytest.raises(StoreError):
        run_dump(dump_spec(model_dir, corpus, out, dataset={"maxTokens": 512}))


def test_profile_annotation_records_a_trace_of_those_batches(model_dir, corpus, tmp_path, monkeypatch):
    podinfo = tmp_path / "podinfo"
    podinfo.mkdir()
    (podinfo / "annotations").write_text('interp.dev/profile-steps="2-4"\nother="x"\n')
    monkeypatch.setenv("INTERP_PODINFO_DIR", str(podinfo))
    out = tmp_path / "profiled"
    run_dump(dump_spec(model_dir, corpus, out, dataset={"maxTokens": 512}))
    traces = list((out / "profiles").glob("*.json"))
    assert [t.name for t in traces] == ["profile-rank0-steps-2-4.json"]
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any(e.get("name", "").startswith("aten::") for e in events)
    verify_store(out)


def test_progress_report_counts_the_whole_store(plain_store, model_dir, corpus):
    dump = Dump(parse_config({"spec": dump_spec(model_dir, corpus, plain_store)}))
    manifest = ActivationStore(plain_store).manifest
    report = dump.report()
    assert report["shardsDone"] == len(manifest.shards) and report["bytesWritten"] == manifest.bytes
    assert (report["rank"], report["worldSize"], report["stage"]) == (0, 1, "start")
