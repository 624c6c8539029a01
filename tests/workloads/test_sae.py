"""The reference SAE: activations against plain formulas, and the safetensors + JSON format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp_workloads.instrument import SAE, SparseAutoencoder
from interp_workloads.instrument.sae import CONFIG_FILE, WEIGHTS_FILE
from interp_workloads.spec.sae import SAEConfig


def _sae(activation, **kw):
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64, activation=activation, **kw))
    sae.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.b_enc.normal_(generator=torch.Generator().manual_seed(2))
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(3))
        if activation == "jumprelu":
            sae.threshold.fill_(0.3)
    return sae


X = torch.randn(10, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("activation", "kw", "formula"),
    [
        ("relu", {}, lambda pre, sae: torch.relu(pre)),
        ("jumprelu", {}, lambda pre, sae: torch.where(pre > 0.3, pre, torch.zeros_like(pre))),
        ("topk", {"k": 5},
         lambda pre, sae: torch.relu(pre) * (pre >= pre.topk(5, dim=-1).values[:, -1:])),
    ],
)
def test_encode_decode_match_the_formulas(activation, kw, formula):
    sae = _sae(activation, **kw)
    pre = (X - sae.b_dec) @ sae.W_enc + sae.b_enc
    latents = sae.encode(X)
    torch.testing.assert_close(latents, formula(pre, sae))
    torch.testing.assert_close(sae.decode(latents), latents @ sae.W_dec + sae.b_dec)
    if activation == "topk":
        assert (latents != 0).sum(-1).max() <= 5
    assert isinstance(sae, SAE)


def test_decoder_rows_start_unit_norm_and_encoder_is_their_transpose():
    sae = _sae("relu")
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)


def test_save_load_round_trip_and_format(tmp_path):
    sae = _sae("jumprelu")
    sae.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])  # no temp files left
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["format"] == "interp-sae" and config["version"] == 1
    assert set(load_file(str(tmp_path / WEIGHTS_FILE))) == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    loaded = SparseAutoencoder.load(tmp_path)
    torch.testing.assert_close(loaded.encode(X), sae.encode(X), rtol=0, atol=0)
    torch.testing.assert_close(loaded(X), sae(X), rtol=0, atol=0)


def test_load_rejects_weights_that_do_not_match_the_config(tmp_path):
    _sae("relu").save(tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    tensors["W_enc"] = tensors["W_enc"][:, :32].contiguous()
    save_file(tensors, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="do not match the config's shapes"):
        SparseAutoencoder.load(tmp_path)
