"""CE loss recovered: the three losses against a plain Hugging Face forward with a manual forward hook, and the
ratio's two ends (an SAE that reconstructs exactly recovers everything; a random one recovers less)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from interp_workloads.sae import CoderConfig, SparseCoder
from interp_workloads.testing import build_tiny_model
from interp_workloads.train.downstream import downstream_losses

LAYER, D, SEQ = 1, 32, 16


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    path = build_tiny_model("gpt2", tmp_path_factory.mktemp("gpt2"), n_layers=2, d_model=D)
    return AutoModelForCausalLM.from_pretrained(path).eval()


def contexts(model: torch.nn.Module, n: int = 6) -> torch.Tensor:
    """Text the model itself samples at a low temperature: its clean loss is well below zero-ablation's (on random
    tokens a random-weight model does no better than uniform, and the ratio would mean nothing)."""
    torch.manual_seed(0)
    start = torch.randint(0, model.config.vocab_size, (n, 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.generate(start, max_length=SEQ, min_length=SEQ, do_sample=True, temperature=0.3, top_k=0,
                              pad_token_id=model.config.pad_token_id)


def random_sae(seed: int = 0) -> SparseCoder:
    return SparseCoder(CoderConfig(architecture="topk", d_in=D, d_sae=64, k=4),
                       generator=torch.Generator().manual_seed(seed))


def exact_sae() -> SparseCoder:
    """relu(x) - relu(-x) = x: latents [x⁺, x⁻], decoder [I; -I] reconstruct any input exactly."""
    sae = SparseCoder(CoderConfig(architecture="relu", d_in=D, d_sae=2 * D))
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def reference_loss(model: torch.nn.Module, ids: torch.Tensor, replace=None) -> float:
    """Mean next-token loss of a plain HF forward, the output of block LAYER (resid_post) replaced by ``replace``."""
    handle = None
    if replace is not None:
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            new = replace(hidden)
            return (new, *output[1:]) if isinstance(output, tuple) else new
        handle = model.transformer.h[LAYER].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return float(model(input_ids=ids, labels=ids).loss)
    finally:
        if handle is not None:
            handle.remove()


def test_losses_match_a_plain_forward_with_a_manual_hook(model: torch.nn.Module) -> None:
    ids = contexts(model)
    sae = random_sae()
    got = downstream_losses(model, ids, {"random": (f"resid_post.{LAYER}", sae)}, batch_size=4)["random"]
    with torch.no_grad():
        clean = reference_loss(model, ids)
        spliced = reference_loss(model, ids, lambda h: sae.decode(sae.encode(h.reshape(-1, D))).reshape(h.shape))
        zeroed = reference_loss(model, ids, torch.zeros_like)
    assert got.clean == pytest.approx(clean, rel=1e-5)
    assert got.spliced == pytest.approx(spliced, rel=1e-5)
    assert got.zero_ablated == pytest.approx(zeroed, rel=1e-5)
    assert got.ce_loss_recovered == pytest.approx((zeroed - spliced) / (zeroed - clean), rel=1e-4)


def test_an_exact_reconstruction_recovers_everything_and_a_random_one_less(model: torch.nn.Module) -> None:
    ids = contexts(model)
    hook = f"resid_post.{LAYER}"
    losses = downstream_losses(model, ids, {"exact": (hook, exact_sae()), "random": (hook, random_sae(1))})
    assert losses["exact"].ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert losses["exact"].zero_ablated > losses["exact"].clean
    random = losses["random"].ce_loss_recovered
    assert random is not None and random < 0.99
    assert losses["random"].to_dict()["ceLossRecovered"] == random
