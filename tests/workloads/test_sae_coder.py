"""SparseCoder: the sparse TopK path against plain dense autograd, the forward contract, export and loading."""

from __future__ import annotations

import json

import pytest
import torch

from interp_workloads.instrument import SAE
from interp_workloads.sae import (
    CONFIG_FILE,
    SAELENS_WEIGHTS_FILE,
    WEIGHTS_FILE,
    CoderConfig,
    SparseCoder,
    export_sae,
    load_sae,
)


def _pair(architecture: str, d_out: int | None = None, **kw):
    """The same random coder twice: sparse decoder and the dense reference."""
    coders = []
    for decoder in ("sparse", "dense"):
        cfg = CoderConfig(architecture=architecture, d_in=24, d_sae=96, d_out=d_out, k=6, decoder=decoder, **kw)
        coders.append(SparseCoder(cfg, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(2)
        for p in coders[0].parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    coders[1].load_state_dict(coders[0].state_dict())
    return coders


def _plain_topk_reference(coder, x, target, dead, k, aux_k):
    """TopK + AuxK written from scratch on the coder's parameters (no library code)."""
    pre = (x - coder.b_dec) @ coder.W_enc + coder.b_enc
    top = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    recon = z @ coder.W_dec + coder.b_dec
    var = (target - target.mean(0)).pow(2).sum()
    fvu = (recon - target).pow(2).sum() / var
    residual = (target - recon).detach()
    aux_pre = pre.masked_fill(~dead, float("-inf"))
    aux_k = min(aux_k, int(dead.sum()))
    aux_top = aux_pre.topk(aux_k, dim=-1)
    za = torch.zeros_like(pre).scatter(-1, aux_top.indices, torch.relu(aux_top.values))
    aux = (za @ coder.W_dec - residual).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum()
    return recon, fvu + coder.cfg.aux_k_coefficient * min(1.0, int(dead.sum()) / aux_k) * aux


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
@pytest.mark.parametrize("d_out", [None, 20])
def test_sparse_path_equals_dense_reference_forward_and_every_gradient(architecture, d_out):
    sparse, dense = _pair(architecture, d_out=d_out)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 24, generator=gen)
    target = None if d_out is None else torch.randn(40, d_out, generator=gen)
    dead = torch.rand(96, generator=gen) < 0.3
    outs = [c(x, target=target, dead_mask=dead) for c in (sparse, dense)]
    torch.testing.assert_close(outs[0].reconstruction, outs[1].reconstruction, rtol=1e-5, atol=1e-5)
    assert set(outs[0].losses) == {"mse", "fvu", "auxk", "l0"}
    for name in outs[0].losses:
        torch.testing.assert_close(outs[0].losses[name], outs[1].losses[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[0].fired, outs[1].fired)
    for out in outs:
        out.loss.backward()
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        assert p.grad is not None and float(p.grad.abs().max()) > 0, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_topk_loss_and_gradients_match_a_from_scratch_formula():
    coder = _pair("topk")[0]
    ref = _pair("topk")[1]
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(32, 24, generator=gen)
    dead = torch.rand(96, generator=gen) < 0.4
    out = coder(x, dead_mask=dead)
    recon, loss = _plain_topk_reference(ref, x, x, dead, 6, coder.cfg.aux_k_in_force)
    torch.testing.assert_close(out.reconstruction, recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    loss.backward()
    for p, q in zip(coder.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    assert out.latent_indices is not None and out.latent_indices.shape == (32, 6)
    assert out.latent_acts.shape == (32, 6)
    assert float(out.l0) == pytest.approx(float((out.latent_acts > 0).sum()) / 32)


def test_input_gradient_of_the_sparse_encoder():
    sparse, dense = _pair("topk")
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(5))
    grads = []
    for coder in (sparse, dense):
        xi = x.clone().requires_grad_()
        coder(xi).reconstruction.pow(2).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_batchtopk_keeps_n_times_k_latents_per_batch_and_learns_a_threshold():
    coder = _pair("batchtopk")[0]
    x = torch.randn(50, 24, generator=torch.Generator().manual_seed(6))
    out = coder(x)
    assert out.latent_indices is None and out.latent_acts.shape == (50, 96)
    assert int((out.latent_acts > 0).sum()) == 50 * 6
    smallest = float(out.latent_acts.detach()[out.latent_acts > 0].min())
    assert float(coder.batch_threshold) == pytest.approx(smallest)
    coder.eval()
    latents = coder.encode(x)
    pre = (x - coder.b_dec) @ coder.W_enc + coder.b_enc
    torch.testing.assert_close(latents, torch.where(pre > smallest, pre, torch.zeros_like(pre)))
    torch.testing.assert_close(coder(x).reconstruction, latents @ coder.W_dec + coder.b_dec)


def test_unit_norm_decoder_is_kept_and_radial_gradient_removed():
    coder = _pair("topk")[0]
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(7))
    coder(x).loss.backward()
    coder.before_step_()
    rows = coder.W_dec / coder.W_dec.norm(dim=1, keepdim=True)
    torch.testing.assert_close((coder.W_dec.grad * rows).sum(1), torch.zeros(96), atol=1e-6, rtol=0)
    coder.after_step_()
    torch.testing.assert_close(coder.W_dec.norm(dim=1), torch.ones(96))


def test_b_dec_from_the_geometric_median_is_robust_to_outliers():
    coder = SparseCoder(CoderConfig(architecture="topk", d_in=4, d_sae=8, k=2))
    sample = torch.randn(200, 4, generator=torch.Generator().manual_seed(8)) * 0.1 + 3.0
    sample[:5] = 1000.0
    coder.init_b_dec_(sample)
    torch.testing.assert_close(coder.b_dec, torch.full((4,), 3.0), atol=0.05, rtol=0)
    coder.init_b_dec_(sample, method="mean")
    torch.testing.assert_close(coder.b_dec, sample.mean(0))
    with pytest.raises(ValueError, match=r"sample must be \[n, 4\]"):
        coder.init_b_dec_(torch.zeros(3, 5))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"architecture": "topk", "k": None}, r"CoderConfig\.k: .*needs 1 <= k"),
        ({"architecture": "relu", "k": 3}, r"CoderConfig\.k: k is only used"),
        ({"architecture": "gated"}, r"CoderConfig\.architecture"),
        ({"architecture": "topk", "k": 2, "sparsity_coefficient": 1.0}, r"CoderConfig\.sparsity_coefficient"),
        ({"architecture": "jumprelu", "jumprelu_bandwidth": 0.0}, r"CoderConfig\.jumprelu_bandwidth"),
        ({"architecture": "topk", "k": 2, "decoder": "fast"}, r"CoderConfig\.decoder"),
    ],
)
def test_bad_config_names_the_field(kw, message):
    with pytest.raises(ValueError, match=message):
        CoderConfig(d_in=8, d_sae=16, **kw)


def test_forward_rejects_bad_shapes():
    coder = SparseCoder(CoderConfig(architecture="topk", d_in=8, d_sae=16, k=2))
    with pytest.raises(ValueError, match=r"x must be \[n, d_in=8\]"):
        coder(torch.zeros(3, 9))
    with pytest.raises(ValueError, match=r"set CoderConfig\.d_out for a transcoder"):
        coder(torch.zeros(3, 8), target=torch.zeros(3, 8))
    transcoder = SparseCoder(CoderConfig(architecture="topk", d_in=8, d_sae=16, k=2, d_out=5))
    with pytest.raises(ValueError, match="needs the target"):
        transcoder(torch.zeros(3, 8))


def _trained_like(architecture, d_out=None):
    kw = {"k": 5} if architecture in ("topk", "batchtopk") else {}
    coder = SparseCoder(CoderConfig(architecture=architecture, d_in=16, d_sae=64, d_out=d_out, **kw),
                        generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(10)
    with torch.no_grad():
        coder.b_enc.normal_(generator=gen)
        coder.b_dec.normal_(generator=gen)
        if architecture == "jumprelu":
            coder.threshold.uniform_(0.1, 0.6, generator=gen)
    if architecture == "batchtopk":
        coder(torch.randn(64, 16, generator=gen))
    return coder.eval()


@pytest.mark.parametrize(("architecture", "d_out"),
                         [("relu", None), ("topk", None), ("batchtopk", None), ("jumprelu", None),
                          ("relu", 12), ("topk", 12), ("jumprelu", 16)])
def test_export_folds_the_scales_and_load_reproduces_the_trained_coder(tmp_path, architecture, d_out):
    coder = _trained_like(architecture, d_out)
    s_in, s_out = 2.5, 0.5 if d_out else 2.5
    folder = export_sae(coder, tmp_path / "sae", input_scale=s_in, target_scale=s_out if d_out else None,
                        hook="resid_post.1", target_hook="mlp_out.1" if d_out else None, model="tiny",
                        extra={"job": "j"})
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, SAELENS_WEIGHTS_FILE])
    assert (folder / WEIGHTS_FILE).read_bytes() == (folder / SAELENS_WEIGHTS_FILE).read_bytes()
    loaded = load_sae(folder)
    assert not loaded.training and isinstance(loaded, SAE)
    raw = torch.randn(30, 16, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        expected_latents = coder.encode(raw * s_in)
        torch.testing.assert_close(loaded.encode(raw), expected_latents, rtol=1e-5, atol=1e-5)
        expected = coder.decode(expected_latents) / s_out
        torch.testing.assert_close(loaded.decode(loaded.encode(raw)), expected, rtol=1e-5, atol=1e-5)
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["metadata"]["interp"]["trained_architecture"] == architecture
    assert config["metadata"]["hook_name"] == "resid_post.1" and config["metadata"]["model_name"] == "tiny"
    assert config["apply_b_dec_to_input"] is (d_out is None)


def test_load_rejects_mismatched_weights_and_unknown_architectures(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = export_sae(_trained_like("relu"), tmp_path / "a", input_scale=1.0, hook="h", target_hook=None,
                        model=None)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    tensors["W_enc"] = tensors["W_enc"][:, :32].contiguous()
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(ValueError, match="do not match the config's shapes"):
        load_sae(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "architecture": "gated"}))
    with pytest.raises(ValueError, match="architecture 'gated' is not one of"):
        load_sae(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sae(tmp_path / "missing")
    with pytest.raises(ValueError, match="input_scale must be a positive finite number"):
        export_sae(_trained_like("relu"), tmp_path / "b", input_scale=float("nan"), hook="h", target_hook=None,
                   model=None)
