"""Our SAE exports as SAELens itself reads them: ``SAE.load_from_disk`` in an environment with sae-lens (made by
``make saelens-compat``, named by INTERP_SAELENS_PYTHON) encodes and decodes like ``load_sae``, for every
architecture SAELens has (TopK transcoders it has not, so they are not exported for it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp_workloads.sae import CoderConfig, SparseCoder, export_sae, load_sae

PYTHON = os.environ.get("INTERP_SAELENS_PYTHON")
pytestmark = pytest.mark.skipif(not PYTHON, reason="needs SAELens' environment: run `make saelens-compat`")
D, F = 24, 96
CASES = {  # name -> (architecture, d_out)
    "topk": ("topk", None), "batchtopk": ("batchtopk", None), "jumprelu": ("jumprelu", None),
    "relu": ("relu", None), "relu-transcoder": ("relu", 16), "jumprelu-transcoder": ("jumprelu", 16),
}


def trained_like(architecture: str, d_out: int | None, seed: int) -> SparseCoder:
    """A coder with every parameter away from its initial value (biases, thresholds), as training leaves it."""
    generator = torch.Generator().manual_seed(seed)
    cfg = CoderConfig(architecture=architecture, d_in=D, d_sae=F, d_out=d_out,  # type: ignore[arg-type]
                      k=6 if architecture in ("topk", "batchtopk") else None)
    coder = SparseCoder(cfg, generator=generator)
    with torch.no_grad():
        for param in coder.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
        if architecture == "jumprelu":
            coder.threshold.copy_(0.2 + 0.3 * torch.rand(F, generator=generator))
    if architecture == "batchtopk":  # one training forward estimates the inference threshold
        coder.train()(torch.randn(64, D, generator=generator))
    return coder


def test_saelens_loads_our_exports_and_encodes_and_decodes_like_us(tmp_path):
    ours = {}
    for seed, (name, (architecture, d_out)) in enumerate(CASES.items()):
        case = tmp_path / name
        coder = trained_like(architecture, d_out, seed)
        export_sae(coder, case / "export", input_scale=1.7, hook="blocks.0.hook_resid_post",
                   target_hook="blocks.0.hook_mlp_out" if d_out else None, model="tiny", target_scale=0.6)
        x = 2.0 * torch.randn(128, D, generator=torch.Generator().manual_seed(100 + seed))
        save_file({"x": x}, str(case / "inputs.safetensors"))
        loaded = load_sae(case / "export")
        with torch.no_grad():
            latents = loaded.encode(x)
            ours[name] = latents, loaded.decode(latents)
    run = subprocess.run([PYTHON, str(Path(__file__).with_name("saelens_side.py")), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    for name, (latents, decoded) in ours.items():
        theirs = load_file(str(tmp_path / name / "saelens.safetensors"))
        assert (latents != 0).sum() > 0, f"{name}: no latent fired; the comparison would be empty"
        torch.testing.assert_close(theirs["latents"], latents, rtol=1e-5, atol=1e-5, msg=f"{name}: encode")
        torch.testing.assert_close(theirs["decoded"], decoded, rtol=1e-5, atol=1e-5, msg=f"{name}: decode")
