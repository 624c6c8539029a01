"""resid_mid is the residual stream itself: edits reach every later reader, gradients cover the MLP and the skip.

The reference replaces each block's output by recomputing its second half by hand from the edited stream
(``m + mlp_half(m)`` with ``m = edit(resid_pre + attention output)``), using plain forward hooks and none of the
core's code, for every family the core names (Qwen3 and Gemma 3 built here from their configs).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, Qwen3Config

from interp_workloads.instrument import SparseAutoencoder, attribute, capture, forward
from interp_workloads.spec import Ablation, AddVector, FeatureEdit, Objective, Projection, Replace, SAESplice
from interp_workloads.spec.sae import SAEConfig
from interp_workloads.testing import tiny_config

D = 32
VOCAB = 96
LAYER = 1
FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gpt_neox")

# Per family: blocks, the module whose output the block adds after attention, and the MLP half of a block.
_LLAMA = ("model.layers", "self_attn", lambda b, m: b.mlp(b.post_attention_layernorm(m)))
_GEMMA2 = ("model.layers", "post_attention_layernorm",
           lambda b, m: b.post_feedforward_layernorm(b.mlp(b.pre_feedforward_layernorm(m))))
ANATOMY = {
    "gpt2": ("transformer.h", "attn", lambda b, m: b.mlp(b.ln_2(m))),
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "gemma": _LLAMA,
    "gemma2": _GEMMA2, "gemma3": _GEMMA2,
    "gpt_neox": ("gpt_neox.layers", "post_attention_dropout",
                 lambda b, m: b.post_mlp_dropout(b.mlp(b.post_attention_layernorm(m)))),
}


def _config(family: str):
    common = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=2 * D, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=8)
    if family == "gemma3":
        return Gemma3TextConfig(**common, head_dim=8, sliding_window=64,
                                layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    config = tiny_config(family, VOCAB, n_layers=3, d_model=D)
    if family == "gpt_neox":
        config.use_parallel_residual = False
    return config


@pytest.fixture(scope="module")
def models():
    built = {}

    def get(family):
        if family not in built:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(_config(family)).eval()
            # Random tiny weights give tiny sublayer outputs; larger ones make a missed edit show in the logits.
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1:
                        p.mul_(3.0)
            built[family] = model.requires_grad_(False)
        return built[family]

    return get


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0  # right padding: row 2 has 5 tokens
    return {"input_ids": ids, "attention_mask": mask}


def _vec(seed, scale=1.0):
    return torch.randn(D, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture(scope="module")
def sae():
    s = SparseAutoencoder(SAEConfig(d_in=D, d_sae=64))
    s.reset_parameters(torch.Generator().manual_seed(2))
    with torch.no_grad():
        s.b_enc.fill_(0.05)
    return s


def _edits(sae):
    v, u, mean, rows = _vec(3, 2.0), _vec(4), _vec(5), _vec(6, 3.0)
    unit = u / u.norm()

    def splice(x):
        z = sae.encode(x)
        z2 = z.clone()
        z2[..., 1] = 6.0
        return x + sae.decode(z2) - sae.decode(z)

    hook = f"resid_mid.{LAYER}"
    return {
        "add": (AddVector(hook=hook, vector=v.tolist(), scale=1.5), lambda x: x + 1.5 * v),
        "project": (Projection(hook=hook, direction=u.tolist(), mode="set", value=4.0),
                    lambda x: x + (4.0 - x @ unit)[..., None] * unit),
        "ablate_zero": (Ablation(hook=hook, mode="zero"), lambda x: torch.zeros_like(x)),
        "ablate_mean": (Ablation(hook=hook, mode="mean", mean=mean.tolist()), lambda x: mean.expand_as(x)),
        "replace": (Replace(hook=hook, values=[rows.tolist()]), lambda x: rows.expand_as(x)),
        "sae": (SAESplice(hook=hook, sae="s", edits=[FeatureEdit(feature=1, op="clamp", value=6.0)]), splice),
    }


def reference(model, family, batch, edit_fn, *, leaf_at=None):
    """Logits with the block's output recomputed from ``edit_fn(resid_pre + attention output)``.

    ``leaf_at`` ("pre" or "mid"): that tensor is replaced by a leaf that requires grad, returned with the logits.
    """
    blocks, attn_path, mlp_half = ANATOMY[family]
    block = model.get_submodule(f"{blocks}.{LAYER}")
    seen = {}

    def keep_input(_m, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if leaf_at == "pre":
            x = x.detach().requires_grad_()
            seen["leaf"] = x
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
        seen["pre"] = x
        return None

    def keep_pre_after_edit(_m, args, kwargs):
        seen["pre"] = args[0] if args else kwargs["hidden_states"]

    def keep_attn(_m, _a, out):
        seen["attn"] = out[0] if isinstance(out, tuple) else out

    def recompute(_m, _a, _out):
        mid = edit_fn(seen["pre"] + seen["attn"])
        if leaf_at == "mid":
            mid = seen["leaf"] = mid.detach().requires_grad_()
        return mid + mlp_half(block, mid)

    handles = [block.register_forward_pre_hook(keep_input, with_kwargs=True),
               block.register_forward_pre_hook(keep_pre_after_edit, with_kwargs=True),
               block.get_submodule(attn_path).register_forward_hook(keep_attn),
               block.register_forward_hook(recompute)]
    try:
        with torch.set_grad_enabled(leaf_at is not None):
            logits = model(**batch).logits
    finally:
        for h in handles:
            h.remove()
    return logits, seen.get("leaf")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["add", "project", "ablate_zero", "ablate_mean", "replace", "sae"])
def test_edit_at_resid_mid_reaches_the_residual_stream(models, family, kind, sae):
    model, batch = models(family), _batch()
    edit, edit_fn = _edits(sae)[kind]
    expected, _ = reference(model, family, batch, edit_fn)
    i = LAYER
    hooks = [f"resid_pre.{i}", f"attn_out.{i}", f"resid_mid.{i}", f"mlp_out.{i}", f"resid_post.{i}"]
    got = forward(model, batch, interventions=[[edit]] * 3, saes={"s": sae}, hooks=hooks)
    torch.testing.assert_close(got.logits, expected, rtol=1e-5, atol=1e-5)
    clean = forward(model, batch).logits
    assert (got.logits - clean).abs().max() > 1e-2, "the edit must move the logits for the comparison to mean much"
    acts = got.activations
    torch.testing.assert_close(acts[f"resid_mid.{i}"], edit_fn(acts[f"resid_pre.{i}"] + acts[f"attn_out.{i}"]),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(acts[f"resid_post.{i}"], acts[f"resid_mid.{i}"] + acts[f"mlp_out.{i}"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_identities_hold_under_upstream_and_downstream_edits(models, family):
    model, batch = models(family), _batch()
    i = LAYER
    edits = [AddVector(hook=f"resid_pre.{i}", vector=_vec(7).tolist(), scale=2.0),
             AddVector(hook=f"attn_out.{i}", vector=_vec(8).tolist(), positions="last"),
             AddVector(hook=f"resid_mid.{i}", vector=_vec(9).tolist(), positions=[1, 2]),
             Projection(hook=f"mlp_out.{i}", direction=_vec(10).tolist(), mode="scale", value=3.0)]
    names = [f"{k}.{i}" for k in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")]
    acts = capture(model, batch, names, interventions=[edits, edits[:2], []])
    pre, attn, mid, mlp, post = (acts[n] for n in names)
    torch.testing.assert_close(post, mid + mlp, rtol=1e-5, atol=1e-5)
    # Row 0 is edited at resid_mid itself (positions 1 and 2); everywhere else the stream is resid_pre + attn_out.
    expected_mid = pre + attn
    expected_mid[0, 1:3] += _vec(9)
    torch.testing.assert_close(mid, expected_mid, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_at_resid_mid_alone_equals_autograd(models, family):
    model, batch = models(family), _batch()
    tokens = [3, 11, 40]
    last = batch["attention_mask"].sum(1) - 1
    rows = torch.arange(3)
    logits, mid = reference(model, family, batch, lambda x: x, leaf_at="mid")
    expected = torch.autograd.grad(torch.log_softmax(logits[rows, last], -1)[rows, tokens].sum(), mid)[0]
    objective = Objective(kind="logprob", token=tokens)
    alone = attribute(model, batch, [f"resid_mid.{LAYER}"], objective)
    torch.testing.assert_close(alone.gradients[f"resid_mid.{LAYER}"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone.activations[f"resid_mid.{LAYER}"], mid.detach(), rtol=0, atol=0)
    # The same gradient whichever other hooks the call names (upstream ones keep the graph through resid_mid).
    together = attribute(model, batch, [f"resid_pre.{LAYER}", f"resid_mid.{LAYER}", f"resid_post.{LAYER}"], objective)
    torch.testing.assert_close(together.gradients[f"resid_mid.{LAYER}"], expected, rtol=1e-5, atol=1e-6)
    # Recording a stand-in leaves the values of the pass exactly as they are.
    torch.testing.assert_close(logits.detach(), forward(model, batch).logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "gpt_neox"])
def test_gradient_at_an_edited_resid_mid_equals_autograd(models, family):
    model, batch = models(family), _batch()
    v = _vec(12, 2.0)
    last = batch["attention_mask"].sum(1) - 1
    logits, mid = reference(model, family, batch, lambda x: x + v, leaf_at="mid")
    expected = torch.autograd.grad(logits[torch.arange(3), last, 9].sum(), mid)[0]
    hook = f"resid_mid.{LAYER}"
    for hooks in ([hook], [f"resid_pre.{LAYER}", hook]):
        got = attribute(model, batch, hooks, Objective(kind="logit", token=9),
                        interventions=[AddVector(hook=hook, vector=v)])
        torch.testing.assert_close(got.gradients[hook], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.activations[hook], mid.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got.objective, logits[torch.arange(3), last, 9].detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "gpt_neox"])
def test_gradient_through_an_edit_at_resid_mid_equals_autograd(models, family):
    model, batch = models(family), _batch()
    v = _vec(11, 2.0)
    last = batch["attention_mask"].sum(1) - 1
    logits, pre = reference(model, family, batch, lambda x: x + v, leaf_at="pre")
    expected = torch.autograd.grad(logits[torch.arange(3), last, 5].sum(), pre)[0]
    got = attribute(model, batch, [f"resid_pre.{LAYER}"], Objective(kind="logit", token=5),
                    interventions=[[AddVector(hook=f"resid_mid.{LAYER}", vector=v.tolist())]] * 3)
    torch.testing.assert_close(got.gradients[f"resid_pre.{LAYER}"], expected, rtol=1e-5, atol=1e-6)
