"""The HTTP API of the inference server on a real uvicorn port: endpoints, OpenAI client, limits, auth, fuzzing."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn
from hypothesis import HealthCheck, given, settings
from safetensors.torch import load

from interp_workloads.instrument import SparseAutoencoder, forward
from interp_workloads.serve.app import BodyLimit, Tokens, create_app
from interp_workloads.serve.server import Limits, Server
from interp_workloads.spec import AddVector, FeatureEdit, SAESplice
from interp_workloads.spec.sae import SAEConfig

D = 32
TOKEN = "s3cret-token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(lm, limits: Limits, tokens: Path | None = None) -> Iterator[tuple[str, Server]]:
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=D, d_sae=64))
    server = Server(lm=lm, saes={"s": sae}, sae_hooks={"s": "resid_post.1"}, limits=limits, model_name="tiny").start()
    port = _port()
    http = uvicorn.Server(uvicorn.Config(BodyLimit(create_app(server, Tokens(tokens)), limits.max_request_bytes),
                                         host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    while not http.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        http.should_exit = True
        thread.join(10)
        server.stop()


@pytest.fixture(scope="module")
def api(gpt2) -> Iterator[tuple[str, Server]]:
    with running(gpt2, Limits(max_new_tokens=8, max_batch_tokens=256, max_request_bytes=64 * 1024,
                              request_timeout_seconds=20)) as value:
        yield value


@pytest.fixture()
def client(api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api[0], timeout=30) as c:
        yield c


def _vec(seed: int) -> list[float]:
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return (v / v.norm() * 5).tolist()


def _reference_greedy(lm, prompt: str, n: int, edits) -> list[int]:
    """Greedy tokens by recomputing the whole sequence each step with ``forward`` (no cache, no engine)."""
    ids = lm.tokenizer(prompt)["input_ids"]
    out: list[int] = []
    for _ in range(n):
        seq = ids + out
        batch = {"input_ids": torch.tensor([seq]), "attention_mask": torch.ones(1, len(seq), dtype=torch.long)}
        logits = forward(lm.model, batch, interventions=[edits], saes=None if not edits else _saes(lm)).logits
        out.append(int(logits[0, -1].argmax()))
    return out


def _saes(_lm) -> dict:
    torch.manual_seed(0)
    return {"s": SparseAutoencoder(SAEConfig(d_in=D, d_sae=64))}


def test_generate_with_a_steering_vector_and_an_sae_clamp_matches_a_reference(client, gpt2):
    vector = _vec(1)
    clamp = {"kind": "sae", "hook": "resid_post.1", "sae": "s", "edits": [{"feature": 2, "op": "clamp", "value": 8}]}
    body = {"prompt": "The quick brown", "max_new_tokens": 6, "temperature": 0, "ignore_eos": True,
            "interventions": [{"kind": "add", "hook": "resid_post.0", "vector": vector, "scale": 2}, clamp]}
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    got = r.json()["generations"][0]["tokens"]
    edits = [AddVector(hook="resid_post.0", vector=vector, scale=2),
             SAESplice(hook="resid_post.1", sae="s", edits=[FeatureEdit(feature=2, op="clamp", value=8)])]
    assert got == _reference_greedy(gpt2, "The quick brown", 6, edits)
    plain = client.post("/v1/generate", json={**body, "interventions": []}).json()["generations"][0]["tokens"]
    assert plain == _reference_greedy(gpt2, "The quick brown", 6, [])
    assert plain != got


def test_named_vectors_upload_list_delete_and_use(client):
    vector = _vec(2)
    r = client.post("/v1/vectors", json={"vector": vector, "hook": "resid_post.0", "name": "tone"})
    assert r.status_code == 201
    info = r.json()
    assert client.post("/v1/vectors", json={"vector": vector, "hook": "resid_post.0"}).json()["id"] == info["id"]
    assert any(v["id"] == info["id"] for v in client.get("/v1/vectors").json())
    by_name = {"prompt": "The quick", "max_new_tokens": 4, "temperature": 0, "ignore_eos": True,
               "interventions": [{"kind": "vector", "name": "tone", "scale": 2}]}
    inline = {**by_name, "interventions": [{"kind": "add", "hook": "resid_post.0", "vector": vector, "scale": 2}]}
    assert client.post("/v1/generate", json=by_name).json() == client.post("/v1/generate", json=inline).json()
    assert client.delete(f"/v1/vectors/{info['id']}").status_code == 204
    assert client.delete(f"/v1/vectors/{info['id']}").status_code == 404
    r = client.post("/v1/generate", json={**by_name, "interventions": [{"kind": "vector", "name": info["id"]}]})
    assert r.status_code == 400 and r.json()["field"] == "interventions[0].name"


def test_forward_captures_and_top_features_and_attribute(client, gpt2):
    r = client.post("/v1/forward", json={"prompt": "The quick brown", "hooks": ["resid_post.1"],
                                         "format": "safetensors"})
    assert r.status_code == 200
    tensors = load(r.content)
    ids = gpt2.tokenizer("The quick brown")["input_ids"]
    want = forward(gpt2.model, {"input_ids": torch.tensor([ids])}, hooks=["resid_post.1"])
    torch.testing.assert_close(tensors["activations.resid_post.1"], want.activations["resid_post.1"])
    r = client.post("/v1/forward", json={"prompt": "The quick brown", "hooks": ["resid_post.1"],
                                         "top_features": [{"sae": "s", "k": 3}]})
    row = r.json()["rows"][0]
    norms = want.activations["resid_post.1"][0].norm(dim=-1).tolist()
    assert row["summaries"]["resid_post.1"]["norm"] == pytest.approx(norms, rel=1e-5)
    latents = _saes(gpt2)["s"].encode(want.activations["resid_post.1"][0])
    assert [f["feature"] for f in row["top_features"]["s"][0]] == latents[0].topk(3).indices.tolist()
    r = client.post("/v1/attribute", json={"prompt": "The quick brown", "hooks": ["resid_post.0"],
                                           "objective": {"kind": "logprob", "token": 7}})
    assert r.status_code == 200 and len(r.json()["hooks"]["resid_post.0"]["attribution"]) == len(ids)
    points = client.get("/v1/hook_points").json()
    assert {"name": "resid_post.2", "shape": [D], "dtype": "float32"} in points
    assert client.get("/v1/saes").json() == [{"name": "s", "hook": "resid_post.1", "d_in": D, "d_sae": 64}]


def test_openai_client_completions_chat_and_streaming(api, client):
    oc = openai.OpenAI(base_url=api[0] + "/v1", api_key="unused")
    native = client.post("/v1/generate", json={"prompt": "The quick", "max_new_tokens": 5, "temperature": 0,
                                                "ignore_eos": True}).json()["generations"][0]
    done = oc.completions.create(model="tiny", prompt="The quick", max_tokens=5, temperature=0,
                                 extra_body={"ignore_eos": True})
    assert done.choices[0].text == native["text"] and done.usage.completion_tokens == 5
    steer = [{"kind": "add", "hook": "resid_post.0", "vector": _vec(3), "scale": 3}]
    streamed = "".join(c.choices[0].text for c in oc.completions.create(
        model="tiny", prompt="The quick", max_tokens=5, temperature=0, stream=True,
        extra_body={"interventions": steer, "ignore_eos": True}))
    steered = client.post("/v1/generate", json={"prompt": "The quick", "max_new_tokens": 5, "temperature": 0,
                                                 "ignore_eos": True, "interventions": steer}).json()
    assert streamed == steered["generations"][0]["text"]
    chat = oc.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=4,
                                      temperature=0, logprobs=True, top_logprobs=2)
    assert chat.choices[0].message.role == "assistant" and len(chat.choices[0].logprobs.content) <= 4
    chunks = list(oc.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                             max_tokens=4, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_invalid_input_is_a_4xx_naming_the_field(client):
    cases = [
        ({"prompt": "x", "max_new_tokens": 9}, 400, "max_new_tokens"),
        ({"prompt": "x" * 2000, "max_new_tokens": 8}, 413, "prompt"),
        ({"prompt": "x", "interventions": [{"kind": "add", "hook": "resid_post.0", "vector": [1.0] * 5}]}, 400,
         "interventions[0]"),
        ({"prompt": "x", "interventions": [{"kind": "sae", "hook": "resid_post.1", "sae": "nope"}]}, 400,
         "interventions[0]"),
        ({"prompt": "x", "interventions": [{"kind": "add", "hook": "resid_post.0", "vector": [1e5] * D}]}, 422,
         None),
        ({"prompt": "", "max_new_tokens": 2}, 400, "prompt"),
    ]
    for body, status, field in cases:
        r = client.post("/v1/generate", json=body)
        assert r.status_code == status, (body, r.text)
        if field:
            assert r.json()["field"] == field
        else:
            assert r.json()["detail"][0]["loc"][:2] == ["body", "interventions"]
    assert client.post("/v1/generate", content=b"x" * (65 * 1024)).status_code == 413


def test_overload_timeout_and_cancellation(api, client):
    url, server = api
    assert server.worker is not None
    gate = threading.Event()
    server.worker.call(lambda: gate.wait(30))  # the engine thread is busy: requests stay in flight
    limit = server.limits.max_concurrent_requests
    object.__setattr__(server.limits, "max_concurrent_requests", 1)
    try:
        results: list[int] = []
        first = threading.Thread(target=lambda: results.append(client.post(
            "/v1/generate", json={"prompt": "The", "max_new_tokens": 2}).status_code))
        first.start()
        while server.in_flight == 0:
            time.sleep(0.01)
        r = client.post("/v1/generate", json={"prompt": "The", "max_new_tokens": 2})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        gate.set()
        first.join(30)
        assert results == [200]
    finally:
        object.__setattr__(server.limits, "max_concurrent_requests", limit)
    gate = threading.Event()
    server.worker.call(lambda: gate.wait(30))
    timeout = server.limits.request_timeout_seconds
    object.__setattr__(server.limits, "request_timeout_seconds", 0.5)
    try:
        assert client.post("/v1/generate", json={"prompt": "The", "max_new_tokens": 2}).status_code == 504
    finally:
        object.__setattr__(server.limits, "request_timeout_seconds", timeout)
        gate.set()
    # A client that goes away mid-stream frees its slot and its batch row.
    with httpx.Client(base_url=url, timeout=30) as c, c.stream(
            "POST", "/v1/completions", json={"prompt": "The", "max_tokens": 8, "stream": True,
                                             "temperature": 0}) as stream:
        next(stream.iter_lines())
    deadline = time.monotonic() + 30
    while (server.in_flight or server.worker.engine.rows) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.in_flight == 0 and not server.worker.engine.rows


def test_bearer_tokens_from_the_secret_file(gpt2, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"other\n{TOKEN}\n")
    with running(gpt2, Limits(max_new_tokens=4), tokens) as (url, _), httpx.Client(base_url=url) as c:
        body = {"prompt": "The", "max_new_tokens": 1}
        assert c.post("/v1/generate", json=body).status_code == 401
        assert c.post("/v1/generate", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/generate", json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        oc = openai.OpenAI(base_url=url + "/v1", api_key=TOKEN)
        assert oc.completions.create(model="tiny", prompt="The", max_tokens=1).choices
        metrics = c.get("/metrics").text
        assert 'interp_serve_rejections_total{reason="unauthorized"} 2.0' in metrics


def test_fuzzed_requests_from_the_openapi_schema_get_no_5xx(api):
    import schemathesis

    url, _ = api
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    failures: list[str] = []

    def fuzz(operation) -> None:
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(base_url=url, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{operation.label}: {response.status_code} {response.text[:300]} "
                                f"body={json.dumps(case.body, default=str)[:300]}")

        check()

    for result in schema.get_all_operations():
        fuzz(result.ok())
    assert not failures, failures[:5]
