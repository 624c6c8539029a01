"""On-the-fly data: the stream's rows are the activations of a plain Hugging Face forward (output_hidden_states) of
the corpus contexts, each rank reading its own slice, the forward stopping after the deepest hook; an end-to-end run
trains, exports, and reports CE loss recovered on held-out contexts; a hook the model lacks is refused by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp_workloads.corpus import iter_documents, pack_contexts, packing_for
from interp_workloads.testing import build_tiny_model, write_corpus
from interp_workloads.train.config import ConfigError, parse_config
from interp_workloads.train.onthefly import open_stream

D, LENGTH = 32, 16


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("onthefly")
    model = build_tiny_model("gpt2", root / "model", n_layers=2, d_model=D)
    corpus = write_corpus(root / "corpus.jsonl", 120, seed=3)
    fit(model, corpus)
    return model, corpus


def fit(model_dir: Path, corpus: Path, steps: int = 60) -> None:
    """A few Adam steps on the corpus: a random-weight model predicts no better than zero-ablating its residual,
    which leaves CE loss recovered undefined."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).train()
    contexts = reference_contexts(model_dir, corpus)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = contexts[torch.randint(0, contexts.shape[0], (16,), generator=generator)]
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    model.save_pretrained(model_dir, safe_serialization=True)


def job(model: Path, corpus: Path, output: Path, *, hook: str = "resid_post.0", **training) -> dict:
    return {"spec": {
        "model": {"storage": {"uri": f"file://{model}"}, "dtype": "float32"},
        "data": {"onTheFly": {"dataset": {"source": {"uri": f"file://{corpus}"}, "format": "jsonl"},
                              "contextLength": LENGTH, "batchSize": 4}},
        "saes": [{"name": "topk", "hookPoint": hook, "architecture": "topk", "dictSize": 128, "k": 8,
                  "learningRate": 1e-2},
                 {"name": "transcoder", "hookPoint": "resid_mid.0", "targetHookPoint": "mlp_out.0",
                  "architecture": "topk", "dictSize": 128, "k": 8, "learningRate": 1e-2}],
        "training": {"tokens": 4096, "batchSizeTokens": 96, "lrSchedule": {"warmupSteps": 2},
                     "metricsIntervalSteps": 8, "checkpointIntervalSteps": 1000} | training,
        "output": {"uri": f"file://{output}"}}}


def reference_contexts(model: Path, corpus: Path) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(model)
    packed = pack_contexts(iter_documents(corpus, "jsonl"), tokenizer, LENGTH, packing=packing_for(tokenizer))
    return torch.stack([torch.from_numpy(ids).long() for ids, _ in packed])


def test_each_rank_reads_its_slice_of_a_plain_forwards_hidden_states(files, tmp_path, monkeypatch):
    model_dir, corpus = files
    batch, world = 96, 2  # 6 contexts a step: ranks' slices cut contexts in the middle
    streams = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        config = parse_config(job(model_dir, corpus, tmp_path / "out", batchSizeTokens=batch))
        streams.append(open_stream(config, {"resid_post.0": "saes[topk].hookPoint"}, torch.device("cpu"),
                                   torch.device("cpu")))
    stream = streams[0]
    steps = stream.tokens // batch + 2  # past the end of the first epoch, into the second
    got = [[] for _ in range(world)]
    for rank, each in enumerate(streams):
        for _, (_, rows) in zip(range(steps), each.batches(0, batch, rank, world), strict=False):
            assert rows["resid_post.0"].shape == (batch // world, D)
            got[rank].append(rows["resid_post.0"])
    stream_rows = torch.cat([torch.cat([got[r][s] for r in range(world)]) for s in range(steps)])

    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    contexts = reference_contexts(model_dir, corpus)
    held = stream.held_out.shape[0]
    assert 0 < held <= contexts.shape[0] // 10
    torch.testing.assert_close(stream.held_out, contexts[:held])
    train = contexts[held:]
    epochs = (stream_rows.shape[0] + stream.tokens - 1) // stream.tokens
    order = torch.cat([torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(e))
                       for e in range(epochs)])
    with torch.no_grad():
        hidden = hf(input_ids=train[order], output_hidden_states=True).hidden_states[1]  # block 0's output
    expected = hidden.reshape(-1, D)[:stream_rows.shape[0]]
    torch.testing.assert_close(stream_rows, expected, rtol=1e-5, atol=1e-5)


def test_the_forward_stops_after_the_deepest_hook(files, tmp_path):
    model_dir, corpus = files
    stream = open_stream(parse_config(job(model_dir, corpus, tmp_path / "out")),
                         {"resid_post.0": "saes[topk].hookPoint"}, torch.device("cpu"), torch.device("cpu"))
    calls = []
    handle = stream.loaded.model.transformer.h[1].register_forward_hook(lambda *_: calls.append(1))
    try:
        stream.rows(0, 3 * LENGTH)
    finally:
        handle.remove()
    assert calls == []


def test_on_the_fly_training_trains_exports_and_reports_ce_loss_recovered(files, tmp_path):
    from interp_workloads.sae import load_sae
    from interp_workloads.train.run import Trainer

    model_dir, corpus = files
    output = tmp_path / "out"
    trainer = Trainer(parse_config(job(model_dir, corpus, output)))
    result = trainer.run()
    assert result["verified"] is True and sorted(result["saes"]) == ["topk", "transcoder"]
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    fvu = [r["fvu"] for r in records if r["sae"] == "topk" and "fvu" in r]
    assert fvu[-1] < 0.5 * fvu[0]
    downstream = [r for r in records if "ceLossRecovered" in r]
    assert [r["sae"] for r in downstream] == ["topk"]  # a transcoder replaces no activation
    recovered = downstream[0]["ceLossRecovered"]
    assert result["downstream"]["topk"]["ceLossRecovered"] == recovered
    assert downstream[0]["zeroAblationLoss"] > downstream[0]["splicedLoss"]
    assert recovered is not None and 0.0 < recovered <= 1.05
    assert [s["ceLossRecovered"] for s in trainer.report()["saes"]] == [recovered, None]
    assert load_sae(output / "topk").d_in == D


def test_a_hook_the_model_lacks_is_refused_by_field(files, tmp_path):
    from interp_workloads.train.run import Trainer

    model_dir, corpus = files
    with pytest.raises(ConfigError, match=r"saes\[topk\]\.hookPoint"):
        Trainer(parse_config(job(model_dir, corpus, tmp_path / "out", hook="resid_post.9"))).run()


def test_the_first_rows_run_through_the_model_once(files, tmp_path):
    """The norms, every b_dec and the export checks read the stream's first rows: one forward serves them all."""
    model_dir, corpus = files
    stream = open_stream(parse_config(job(model_dir, corpus, tmp_path / "out")),
                         {"resid_post.0": "saes[topk].hookPoint"}, torch.device("cpu"), torch.device("cpu"))
    forwards = []
    handle = stream.loaded.model.transformer.h[0].register_forward_hook(lambda *_: forwards.append(1))
    try:
        stream.describe(8 * LENGTH)
        once = len(forwards)
        first = stream.first_rows(8 * LENGTH)
        fewer = stream.first_rows(2 * LENGTH)
    finally:
        handle.remove()
    assert once > 0 and len(forwards) == once
    torch.testing.assert_close(first["resid_post.0"], stream.rows(0, 8 * LENGTH)["resid_post.0"])
    torch.testing.assert_close(fewer["resid_post.0"], first["resid_post.0"][:2 * LENGTH])
