"""The server loads what the trainer exports (cfg.json, SAELens layout) as well as interp-sae folders; checked
against the exported tensors multiplied out by hand."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from interp_workloads.instrument import SparseAutoencoder
from interp_workloads.sae import SAELENS_WEIGHTS_FILE, WEIGHTS_FILE, CoderConfig, SparseCoder, export_sae
from interp_workloads.serve.server import load_sae_folder
from interp_workloads.spec.sae import SAEConfig


def _exported(tmp_path, architecture: str, d_out: int | None = None):
    kw = {"k": 4} if architecture in ("topk", "batchtopk") else {}
    coder = SparseCoder(CoderConfig(architecture=architecture, d_in=16, d_sae=48, d_out=d_out, **kw),
                        generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        coder.b_enc.normal_(generator=gen)
        coder.b_dec.normal_(generator=gen)
        if architecture == "jumprelu":
            coder.threshold.uniform_(0.1, 0.5, generator=gen)
    if architecture == "batchtopk":
        coder(torch.randn(64, 16, generator=gen))
    return export_sae(coder.eval(), tmp_path / architecture, input_scale=1.7, hook="resid_post.1",
                      target_hook="mlp_out.1" if d_out else None, model="tiny")


def _by_hand(tensors: dict[str, torch.Tensor], x: torch.Tensor, architecture: str) -> torch.Tensor:
    pre = (x - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"]
    if architecture == "topk":
        top = pre.topk(4, dim=-1)
        latents = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    elif architecture == "relu":
        latents = pre.relu()
    else:  # jumprelu, and batchtopk exported as jumprelu with its threshold
        latents = pre.relu() * (pre > tensors["threshold"])
    return latents @ tensors["W_dec"] + tensors["b_dec"]


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu", "relu"])
def test_a_trainer_export_is_served_as_its_tensors_say(tmp_path, architecture):
    folder = _exported(tmp_path, architecture)
    sae = load_sae_folder(folder, "cpu")
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = sae.decode(sae.encode(x))
    torch.testing.assert_close(got, _by_hand(load_file(str(folder / WEIGHTS_FILE)), x, architecture),
                               rtol=1e-5, atol=1e-5)


def test_a_saelens_folder_an_interp_sae_folder_and_bad_folders(tmp_path):
    folder = _exported(tmp_path, "topk")
    (folder / WEIGHTS_FILE).unlink()  # as SAELens writes it: only sae_weights.safetensors
    assert (folder / SAELENS_WEIGHTS_FILE).is_file() and load_sae_folder(folder, "cpu").d_in == 16
    ours = SparseAutoencoder(SAEConfig(d_in=16, d_sae=32)).save(tmp_path / "ours")
    assert isinstance(load_sae_folder(ours, "cpu"), SparseAutoencoder)
    with pytest.raises(FileNotFoundError, match=r"neither sae_config\.json .* nor cfg\.json"):
        load_sae_folder(tmp_path / "missing", "cpu")
    with pytest.raises(ValueError, match=r"a transcoder \(16 -> 12\) cannot be spliced"):
        load_sae_folder(_exported(tmp_path / "tc", "relu", d_out=12), "cpu")
