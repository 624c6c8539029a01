"""Loading through the real transformers code path: safetensors only, no remote code unless allowed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from wl_helpers import batch_of

from interp_workloads.instrument import HookPointError, SparseAutoencoder, capture, forward, resolve
from interp_workloads.models import load_model
from interp_workloads.spec import AddVector, ModelSpec, SAESplice
from interp_workloads.spec.sae import SAEConfig
from interp_workloads.testing import build_tiny_model

REMOTE_CODE = """\
import pathlib
pathlib.Path({marker!r}).write_text("remote code ran")
from transformers import LlamaConfig, LlamaForCausalLM
class CustomConfig(LlamaConfig):
    model_type = "custom_lm"
class CustomModel(LlamaForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("llama"))


def test_loaded_model_is_eval_frozen_and_right_padded(llama):
    assert not llama.model.training
    assert not any(p.requires_grad for p in llama.model.parameters())
    assert llama.family.name == "llama"
    batch = batch_of(llama)
    assert batch["attention_mask"][:, 0].all()  # right padding: every row starts at position 0
    assert batch["input_ids"].shape[0] == 3


def test_dtype_comes_from_the_spec_and_edits_keep_it(llama_dir):
    lm = load_model(ModelSpec(model=str(llama_dir), dtype="bfloat16"))
    assert lm.model.dtype == torch.bfloat16
    batch = batch_of(lm)
    acts = capture(lm.model, batch, ["resid_post.0"], dtype="float32")
    assert acts["resid_post.0"].dtype == torch.float32
    clean = forward(lm.model, batch, hooks=["resid_post.0"])
    vector = [0.25] * 32
    steered = forward(lm.model, batch, hooks=["resid_post.0"],
                      interventions=[[AddVector(hook="resid_post.0", vector=vector, scale=2.0)]] * 3)
    x = clean.activations["resid_post.0"]
    assert steered.activations["resid_post.0"].dtype == torch.bfloat16
    # Edits compute in float32 and round once to the model's dtype.
    torch.testing.assert_close(steered.activations["resid_post.0"],
                               (x.float() + 2.0 * torch.tensor(vector)).to(torch.bfloat16), rtol=0, atol=0)
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64))
    spliced = forward(lm.model, batch, saes={"s": sae}, interventions=[[SAESplice(hook="resid_post.0", sae="s")]] * 3)
    torch.testing.assert_close(spliced.logits, clean.logits, rtol=0, atol=0)


def test_pickle_checkpoints_are_refused(llama_dir, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(llama_dir, pickled)
    state = load_model(ModelSpec(model=str(llama_dir))).model.state_dict()
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_model(ModelSpec(model=str(pickled)))


def test_remote_code_runs_only_when_the_spec_allows_it(llama_dir, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(llama_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    config["model_type"] = "custom_lm"
    config["auto_map"] = {"AutoConfig": "modeling_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (custom / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "EXECUTED"
    (custom / "modeling_custom.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(ModelSpec(model=str(custom)))
    assert not marker.exists()
    lm = load_model(ModelSpec(model=str(custom), trust_remote_code=True))
    assert type(lm.model).__name__ == "CustomModel"
    assert marker.exists()
    # No adapter for this model type: module paths work, canonical names explain why they do not.
    assert lm.family is None
    acts = capture(lm.model, batch_of(lm), ["model.layers.1"])
    assert acts["model.layers.1"].shape[-1] == 32
    with pytest.raises(HookPointError, match="'custom_lm' has no canonical names"):
        resolve(lm.model, "resid_post.1")


def test_hub_ids_are_not_fetched_offline():
    with pytest.raises(OSError):
        load_model(ModelSpec(model="example-org/not-a-local-model"))
