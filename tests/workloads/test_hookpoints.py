"""Canonical hook names mean the same tensor in every family; checked against transformers' own hidden states."""

from __future__ import annotations

import math
import re

import pytest
import torch
from wl_helpers import FAMILIES, batch_of, hook_counts

from interp_workloads.instrument import HookPointError, canonical_names, capture, hook_points, resolve


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_hooks_equal_output_hidden_states(tiny_model, family):
    lm = tiny_model(family)
    batch = batch_of(lm)
    with torch.no_grad():
        hidden = lm.model(**batch, output_hidden_states=True).hidden_states
    before = hook_counts(lm.model)
    acts = capture(lm.model, batch, canonical_names(lm.model), stop_early=False)
    assert hook_counts(lm.model) == before
    n = len(hidden) - 1
    assert n == 3
    torch.testing.assert_close(acts["embed"], hidden[0], rtol=0, atol=0)
    for i in range(n):
        torch.testing.assert_close(acts[f"resid_pre.{i}"], hidden[i], rtol=0, atol=0)
    for i in range(n - 1):
        torch.testing.assert_close(acts[f"resid_post.{i}"], hidden[i + 1], rtol=0, atol=0)
    # transformers replaces the last hidden state with the final norm's output.
    torch.testing.assert_close(acts["final"], hidden[n], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sublayer_outputs_are_what_the_residual_stream_receives(tiny_model, family):
    lm = tiny_model(family)
    acts = capture(lm.model, batch_of(lm), canonical_names(lm.model))
    for i in range(3):
        pre, post = acts[f"resid_pre.{i}"], acts[f"resid_post.{i}"]
        torch.testing.assert_close(post, pre + acts[f"attn_out.{i}"] + acts[f"mlp_out.{i}"], rtol=1e-5, atol=1e-5)
        if f"resid_mid.{i}" in acts:
            torch.testing.assert_close(acts[f"resid_mid.{i}"], pre + acts[f"attn_out.{i}"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_gemma_embed_includes_the_sqrt_d_scaling(tiny_model, family):
    lm = tiny_model(family)
    batch = batch_of(lm)
    acts = capture(lm.model, batch, ["embed"])
    raw = lm.model.get_input_embeddings().weight[batch["input_ids"]]
    torch.testing.assert_close(acts["embed"], raw * math.sqrt(lm.model.config.hidden_size))


def test_gpt2_embed_includes_position_embeddings(gpt2):
    batch = batch_of(gpt2)
    acts = capture(gpt2.model, batch, ["embed"])
    seq = batch["input_ids"].shape[1]
    tr = gpt2.model.transformer
    manual = tr.wte.weight[batch["input_ids"]] + tr.wpe.weight[:seq]
    torch.testing.assert_close(acts["embed"], manual)


def test_module_path_captures_that_modules_output(llama):
    batch = batch_of(llama)
    seen = {}
    mlp = llama.model.get_submodule("model.layers.1.mlp")
    handle = mlp.register_forward_hook(lambda _m, _a, out: seen.setdefault("mlp", out.detach().clone()))
    try:
        with torch.no_grad():
            llama.model(**batch)
    finally:
        handle.remove()
    acts = capture(llama.model, batch, ["model.layers.1.mlp", "mlp_out.1"])
    torch.testing.assert_close(acts["model.layers.1.mlp"], seen["mlp"], rtol=0, atol=0)
    torch.testing.assert_close(acts["mlp_out.1"], seen["mlp"], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resid_pre.3", "the model has 3 layers (0..2)"),
        ("resid_post.17", "resid_post.{0..2}"),
        ("attn.out.1", "valid canonical names: embed, resid_pre.{0..2}"),
        ("model.layers.9.mlp", "unknown hook point 'model.layers.9.mlp'"),
        ("", "unknown hook point ''"),
    ],
)
def test_unknown_names_list_the_valid_ones(llama, name, message):
    with pytest.raises(HookPointError, match=re.escape(message)):
        resolve(llama.model, name)


def test_parallel_residual_has_no_resid_mid(tiny_model):
    parallel = tiny_model("gpt_neox")
    assert parallel.model.config.use_parallel_residual
    assert "resid_mid.0" not in canonical_names(parallel.model)
    with pytest.raises(HookPointError, match="parallel residual"):
        resolve(parallel.model, "resid_mid.0")
    sequential = tiny_model("gpt_neox", use_parallel_residual=False)
    acts = capture(sequential.model, batch_of(sequential), ["resid_pre.1", "attn_out.1", "resid_mid.1"])
    torch.testing.assert_close(acts["resid_mid.1"], acts["resid_pre.1"] + acts["attn_out.1"])


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_points_list_names_sites_and_shapes(tiny_model, family):
    lm = tiny_model(family)
    d = lm.model.config.hidden_size
    before = hook_counts(lm.model)
    points = hook_points(lm.model)
    assert [p.name for p in points] == canonical_names(lm.model)
    assert {p.shape for p in points} == {(d,)}
    assert points[0].name == "embed" and points[-1].name == "final"
    with_modules = {p.name: p for p in hook_points(lm.model, include_modules=True)}
    assert with_modules["lm_head"].shape == (lm.model.config.vocab_size,)
    mlp = resolve(lm.model, "mlp_out.0").module_path
    assert with_modules[mlp].shape == (d,)
    assert hook_counts(lm.model) == before
