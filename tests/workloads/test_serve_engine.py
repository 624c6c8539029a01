"""The serving engine: batched requests with different interventions equal the same requests served alone, and
cached decoding equals a recompute of the whole sequence without a cache (interventions at every decode step)."""

from __future__ import annotations

import pytest
import torch
from serve_support import Collector

from interp_workloads.instrument import SparseAutoencoder, forward
from interp_workloads.models import LoadedModel
from interp_workloads.serve.engine import Engine, GenerationRequest
from interp_workloads.serve.sampling import SamplingParams
from interp_workloads.spec import AddVector, FeatureEdit, PositionSlice, Projection, SAESplice
from interp_workloads.spec.sae import SAEConfig

D = 32
NEW = 8


def _vec(seed: int, norm: float = 4.0) -> list[float]:
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return (v / v.norm() * norm).tolist()


def _requests() -> list[tuple[str, list]]:
    return [
        ("The quick brown fox", []),
        ("Kubernetes schedules pods onto", [AddVector(hook="resid_post.1", vector=_vec(1), scale=2.0)]),
        ("A sparse autoencoder reads", [AddVector(hook="resid_pre.2", vector=_vec(2), positions="last")]),
        ("Steering vectors move", [Projection(hook="resid_post.0", direction=_vec(3), mode="zero"),
                                   AddVector(hook="resid_post.0", vector=_vec(4), positions=PositionSlice(start=-2))]),
        ("Tokens, layers, heads", [SAESplice(hook="resid_post.1", sae="s", edits=[FeatureEdit(feature=3, op="clamp",
                                                                                              value=6.0)])]),
    ]


@pytest.fixture(scope="module")
def saes() -> dict[str, SparseAutoencoder]:
    torch.manual_seed(0)
    return {"s": SparseAutoencoder(SAEConfig(d_in=D, d_sae=64))}


def _request(lm: LoadedModel, prompt: str, edits: list, params: SamplingParams | None = None
             ) -> tuple[GenerationRequest, Collector]:
    sink = Collector()
    params = params or SamplingParams(max_new_tokens=NEW, temperature=0, ignore_eos=True, logprobs=5)
    return GenerationRequest(lm.tokenizer(prompt)["input_ids"], params, edits, on_event=sink), sink


def _drain(engine: Engine) -> None:
    while engine.busy:
        engine.step()


def _alone(lm: LoadedModel, saes, prompt: str, edits: list) -> Collector:
    engine = Engine(lm.model, lm.tokenizer, saes)
    request, sink = _request(lm, prompt, edits)
    engine.submit(request)
    _drain(engine)
    return sink


def _assert_same(got: Collector, want: Collector) -> None:
    assert got.tokens == want.tokens
    for a, b in zip(got.logprobs, want.logprobs, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_requests_with_different_interventions_equal_each_served_alone(tiny_model, saes, family):
    lm = tiny_model(family)
    cases = _requests()
    engine = Engine(lm.model, lm.tokenizer, saes)
    sinks = []
    # Three start together; two join the running batch after two and five decode steps.
    for prompt, edits in cases[:3]:
        request, sink = _request(lm, prompt, edits)
        engine.submit(request)
        sinks.append(sink)
    for steps, (prompt, edits) in zip((2, 3), cases[3:], strict=True):
        for _ in range(steps):
            engine.step()
        request, sink = _request(lm, prompt, edits)
        engine.submit(request)
        sinks.append(sink)
    _drain(engine)
    for (prompt, edits), sink in zip(cases, sinks, strict=True):
        assert len(sink.tokens) == NEW
        _assert_same(sink, _alone(lm, saes, prompt, edits))
    # The interventions change the output (so the comparison above is not trivially true).
    assert sinks[1].tokens != _alone(lm, saes, cases[1][0], []).tokens


def _explicit(edit, prompt_len: int, length: int):
    """The same intervention as absolute positions of a sequence of ``length`` tokens (written independently)."""
    if edit.positions == "all":
        return edit
    if edit.positions == "last":
        wanted = list(range(prompt_len - 1, length))
    else:
        start = edit.positions.start
        start = prompt_len + start if start < 0 else start
        wanted = list(range(start, length))
    return edit.model_copy(update={"positions": wanted})


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_cached_decoding_with_interventions_equals_a_recompute_without_cache(tiny_model, saes, family):
    lm = tiny_model(family)
    for prompt, edits in _requests()[1:]:
        sink = _alone(lm, saes, prompt, edits)
        ids = lm.tokenizer(prompt)["input_ids"]
        prompt_len = len(ids)
        for step, token in enumerate(sink.tokens):
            seq = ids + sink.tokens[:step]
            batch = {"input_ids": torch.tensor([seq]), "attention_mask": torch.ones(1, len(seq), dtype=torch.long)}
            rows = [[_explicit(e, prompt_len, len(seq)) for e in edits]]
            logits = forward(lm.model, batch, interventions=rows, saes=saes).logits[0, -1]
            logprobs = torch.log_softmax(logits.float(), -1)
            assert int(logits.argmax()) == token, f"{prompt!r} step {step}"
            for k, v in sink.logprobs[step].items():
                assert float(logprobs[k]) == pytest.approx(v, abs=1e-4)


def test_seeded_sampling_is_reproducible_alone_or_batched(gpt2):
    params = SamplingParams(max_new_tokens=NEW, temperature=0.9, top_p=0.9, top_k=20, seed=7, ignore_eos=True)
    engine = Engine(gpt2.model, gpt2.tokenizer)
    request, alone = _request(gpt2, "The quick", [], params)
    engine.submit(request)
    _drain(engine)
    request, batched = _request(gpt2, "The quick", [], params)
    other, _ = _request(gpt2, "Kubernetes schedules", [AddVector(hook="resid_post.0", vector=_vec(5))], params)
    engine.submit(other)
    engine.submit(request)
    _drain(engine)
    assert batched.tokens == alone.tokens


def test_stop_strings_cancellation_and_max_new_tokens(gpt2):
    engine = Engine(gpt2.model, gpt2.tokenizer)
    request, sink = _request(gpt2, "The quick", [])
    engine.submit(request)
    _drain(engine)
    text = "".join(e.text for e in sink.events)
    assert sink.events[-1].finish_reason == "length" and len(sink.tokens) == NEW
    stop = text[3:5]
    assert stop
    params = SamplingParams(max_new_tokens=NEW, temperature=0, ignore_eos=True, stop=(stop,))
    request, stopped = _request(gpt2, "The quick", [], params)
    engine.submit(request)
    _drain(engine)
    assert stopped.events[-1].finish_reason == "stop"
    assert "".join(e.text for e in stopped.events) == text[: text.find(stop)]
    # A cancelled request leaves the batch before the next step; the other row goes on unchanged.
    first, one = _request(gpt2, "The quick", [])
    second, two = _request(gpt2, "Kubernetes", [])
    engine.submit(first)
    engine.submit(second)
    engine.step()
    second.cancelled = True
    _drain(engine)
    assert two.events[-1].finish_reason == "cancelled" and len(two.tokens) == 2
    assert one.tokens == sink.tokens
    assert not engine.rows and engine.cache is None
