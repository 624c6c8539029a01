"""The inference-service client against the real server app on a uvicorn port (a tiny GPT-2 built here): captured
tensors equal Hugging Face's hidden states, a steering vector shifts the captured activations by exactly itself
(sent inline or registered from a tensor), generation, attribution, and errors that name the field."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import torch
import uvicorn
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp_operator.sdk.inference import InferenceClient, InferenceError, as_floats
from interp_workloads.models import load_model
from interp_workloads.serve.app import BodyLimit, Tokens, create_app
from interp_workloads.serve.server import Limits, Server
from interp_workloads.spec import AddVector, ModelSpec, Objective
from interp_workloads.testing import build_tiny_model

TOKEN = "sdk-test-token"
PROMPT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model("gpt2", tmp_path_factory.mktemp("serve-model"), n_layers=2)


@pytest.fixture(scope="module")
def server_url(model_dir, tmp_path_factory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    lm = load_model(ModelSpec(model=str(model_dir), dtype="float32", device="cpu"))
    limits = Limits(max_new_tokens=8, max_batch_tokens=256, max_request_bytes=1 << 20, request_timeout_seconds=30)
    server = Server(lm=lm, saes={}, sae_hooks={}, limits=limits, model_name="tiny").start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = uvicorn.Server(uvicorn.Config(BodyLimit(create_app(server, Tokens(tokens)), limits.max_request_bytes),
                                         host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    while not http.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        http.should_exit = True
        thread.join(10)
        server.stop()


@pytest.fixture
def inference(server_url) -> Iterator[InferenceClient]:
    with InferenceClient(server_url, token=TOKEN, timeout=30) as client:
        yield client


def test_capture_returns_hugging_face_hidden_states(inference, model_dir):
    captured = inference.capture(PROMPT, hooks=["resid_post.0", "resid_post.1"])
    reference = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = reference(ids, output_hidden_states=True).hidden_states
        # GPT-2's last hidden state has the final layer norm applied; the residual stream itself has not.
        final = reference.transformer.ln_f(captured["resid_post.1"])
    assert captured["resid_post.0"].shape == (1, ids.shape[1], 32)
    torch.testing.assert_close(captured["resid_post.0"], hidden[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, hidden[2], rtol=1e-5, atol=1e-5)
    assert captured["logits"].shape[:2] == ids.shape and int(captured["attention_mask"].sum()) == ids.shape[1]


def test_a_steering_vector_shifts_the_activations_by_itself(inference):
    vector = torch.randn(32, generator=torch.Generator().manual_seed(1))
    base = inference.capture(PROMPT, hooks=["resid_post.1"])["resid_post.1"]
    inline = inference.capture(PROMPT, hooks=["resid_post.1"], interventions=[
        AddVector(hook="resid_post.1", vector=as_floats(vector), scale=2.0)])["resid_post.1"]
    torch.testing.assert_close(inline - base, (2.0 * vector).expand_as(base), rtol=1e-4, atol=1e-4)

    info = inference.register_vector(vector, hook="resid_post.1", name="sdk-test")
    assert info.width == 32 and info.norm == pytest.approx(float(vector.norm()), rel=1e-5)
    assert info.id in [v.id for v in inference.vectors()]
    named = inference.capture(PROMPT, hooks=["resid_post.1"], interventions=[
        {"kind": "vector", "name": info.id, "scale": 2.0}])["resid_post.1"]
    torch.testing.assert_close(named, inline, rtol=1e-5, atol=1e-5)
    inference.delete_vector(info.id)
    assert info.id not in [v.id for v in inference.vectors()]


def test_generate_forward_and_attribute(inference):
    out = inference.generate([PROMPT, "hello"], max_new_tokens=4, temperature=0, ignore_eos=True)
    assert [len(g.tokens) for g in out.generations] == [4, 4]
    steered = inference.generate(PROMPT, max_new_tokens=4, temperature=0, ignore_eos=True,
                                 interventions=[AddVector(hook="resid_post.0", vector=[50.0] * 32)])
    assert len(steered.generations) == 1
    summary = inference.forward(PROMPT, hooks=["resid_post.0"])
    assert len(summary.rows[0].summaries["resid_post.0"].norm) == len(summary.rows[0].tokens)
    attributed = inference.attribute(PROMPT, ["resid_post.0"], Objective(kind="logit", token=5))
    assert len(attributed.hooks["resid_post.0"].attribution) == len(attributed.tokens)
    assert {h.name for h in inference.hook_points()} >= {"resid_post.0", "resid_post.1"}


def test_errors_name_the_field(inference, server_url):
    with pytest.raises(InferenceError) as refused:
        inference.capture(PROMPT, hooks=["resid_post.7"])
    assert refused.value.status == 400 and refused.value.field == "hooks[0]"
    with InferenceClient(server_url) as anonymous, pytest.raises(InferenceError) as unauthorized:
        anonymous.hook_points()
    assert unauthorized.value.status == 401 and "bearer token" in unauthorized.value.message
    with pytest.raises(ValueError, match=r"GenerateRequest: interventions\[0\]"):
        inference.generate(PROMPT, interventions=[{"kind": "add", "hook": "resid_post.0", "vector": []}])
    with pytest.raises(ValueError, match="one-dimensional"):
        inference.register_vector(torch.zeros(2, 32), hook="resid_post.0")
    with pytest.raises(InferenceError) as missing:
        inference.delete_vector("missing")
    assert missing.value.status == 404 and missing.value.field == "vector_id"
