"""What a researcher types: positions and interventions in every accepted form, tensors, callables, one-liners."""

from __future__ import annotations

import pytest
import torch
from wl_helpers import batch_of, hook_counts

from interp_workloads.instrument import (
    FunctionEdit,
    InterventionError,
    SparseAutoencoder,
    attribute,
    canonical_names,
    capture,
    forward,
    hook_points,
)
from interp_workloads.spec import AddVector, Objective, PositionSlice, Projection, Replace, SAEConfig, SAESplice

D = 32


def _vec(seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(D, generator=torch.Generator().manual_seed(seed)) * scale


def _with_hook(model, batch, path, hook):
    """Logits with a plain forward hook ``hook(output) -> output`` on one module."""
    handle = model.get_submodule(path).register_forward_hook(
        lambda _m, _a, out: (hook(out[0]), *out[1:]) if isinstance(out, tuple) else hook(out))
    try:
        with torch.no_grad():
            return model(**batch).logits
    finally:
        handle.remove()


@pytest.fixture
def lm(llama):
    return llama


@pytest.mark.parametrize("positions", [{"start": 1, "stop": -1}, PositionSlice(start=1, stop=-1), slice(1, -1),
                                       slice(1, -1, 1)])
def test_slice_positions_in_every_form(lm, positions):
    batch = batch_of(lm)
    full = capture(lm.model, batch, ["resid_post.0"])["resid_post.0"]
    got = capture(lm.model, batch, ["resid_post.0"], positions=positions)["resid_post.0"]
    torch.testing.assert_close(got, full[:, 1:-1], rtol=0, atol=0)


def test_explicit_positions_as_a_tuple(lm):
    batch = batch_of(lm)
    full = capture(lm.model, batch, "resid_post.0")["resid_post.0"]
    got = capture(lm.model, batch, "resid_post.0", positions=(0, 2, -1))["resid_post.0"]
    torch.testing.assert_close(got, full[:, [0, 2, -1]], rtol=0, atol=0)


@pytest.mark.parametrize(("positions", "message"), [
    (slice(0, 4, 2), "positions: a slice of positions takes step 1"),
    ({"begin": 1}, "positions: a slice of positions has integer"),
    ("first", "positions: must be 'all', 'last'"),
    (2.5, "positions: must be"),
    ([], "positions: explicit positions must list at least one index"),
])
def test_bad_positions_name_the_argument(lm, positions, message):
    before = hook_counts(lm.model)
    with pytest.raises(ValueError, match=message) as caught:
        capture(lm.model, batch_of(lm), ["resid_post.0"], positions=positions)
    assert not isinstance(caught.value, AssertionError)
    assert hook_counts(lm.model) == before


def test_a_flat_list_a_bare_edit_and_dicts_apply_to_every_row(lm):
    batch = batch_of(lm)
    steer = AddVector(hook="resid_post.1", vector=_vec(1).tolist(), scale=3.0)
    zero = Projection(hook="resid_post.1", direction=_vec(2).tolist(), mode="zero")
    per_row = forward(lm.model, batch, interventions=[[steer, zero]] * 3).logits
    assert not torch.allclose(per_row, forward(lm.model, batch).logits)
    flat = forward(lm.model, batch, interventions=[steer, zero]).logits
    torch.testing.assert_close(flat, per_row, rtol=1e-6, atol=1e-6)
    dicts = forward(lm.model, batch, interventions=[steer.model_dump(mode="json"), zero.model_dump(mode="json")])
    torch.testing.assert_close(dicts.logits, per_row, rtol=1e-6, atol=1e-6)
    bare = forward(lm.model, batch, interventions=steer).logits
    torch.testing.assert_close(bare, forward(lm.model, batch, interventions=[[steer]] * 3).logits, rtol=1e-6,
                               atol=1e-6)
    # The reference: a plain hook on block 1 adding the vector and removing the direction in every row.
    u = _vec(2) / _vec(2).norm()

    def manual(x):
        x = x + 3.0 * _vec(1)
        return x - (x @ u)[..., None] * u

    torch.testing.assert_close(flat, _with_hook(lm.model, batch, "model.layers.1", manual), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("interventions", "message"), [
    ([AddVector(hook="embed", vector=[1.0] * D), []], "not a mixture|a mixture: item 0 is an edit"),
    ([[AddVector(hook="embed", vector=[1.0] * D)], 7, None], "item 1, a int, which is neither"),
    ("resid_post.0", "got str"),
    ([[AddVector(hook="embed", vector=[1.0] * D)], ["add"], None], r"interventions\[1\]\[0\]: expected an interv"),
    ([{"kind": "add", "hook": "embed", "vector": [float("nan")] * D}], "32 of 32 values are not finite"),
    ([[], []], "interventions for 2 rows but the batch has 3"),
])
def test_forms_that_fit_no_shape_say_what_is_expected(lm, interventions, message):
    before = hook_counts(lm.model)
    with pytest.raises(InterventionError, match=message):
        forward(lm.model, batch_of(lm), interventions=interventions)
    assert hook_counts(lm.model) == before


def test_tensor_vectors_equal_lists(lm):
    batch = batch_of(lm)
    v = _vec(3)
    as_list = forward(lm.model, batch, interventions=[AddVector(hook="mlp_out.0", vector=v.tolist(), scale=2.0)])
    as_tensor = forward(lm.model, batch, interventions=[AddVector(hook="mlp_out.0", vector=v, scale=2.0)])
    torch.testing.assert_close(as_tensor.logits, as_list.logits, rtol=0, atol=0)


def test_activation_patching_with_captured_tensors(lm):
    ids = torch.randint(0, 300, (2, 6), generator=torch.Generator().manual_seed(3))
    clean = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    corrupt = {"input_ids": ids.flip(1), "attention_mask": torch.ones_like(ids)}
    acts = capture(lm.model, clean, "resid_post.1")["resid_post.1"]
    patches = [[Replace(hook="resid_post.1", values=acts[row])] for row in range(2)]
    patched = forward(lm.model, corrupt, interventions=patches).logits
    torch.testing.assert_close(patched, forward(lm.model, clean).logits, rtol=1e-6, atol=1e-6)


def test_sae_splice_without_the_error_term_replaces_the_activation(lm):
    batch = batch_of(lm)
    sae = SparseAutoencoder(SAEConfig(d_in=D, d_sae=64))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    lossy = forward(lm.model, batch, saes={"s": sae}, hooks=["resid_post.1"],
                    interventions=[SAESplice(hook="resid_post.1", sae="s", keep_error=False)])
    with torch.no_grad():
        expected = _with_hook(lm.model, batch, "model.layers.1", lambda x: sae.decode(sae.encode(x)))
    torch.testing.assert_close(lossy.logits, expected, rtol=1e-5, atol=1e-5)
    clean = forward(lm.model, batch).logits
    assert (lossy.logits - clean).abs().max() > 1e-2
    exact = forward(lm.model, batch, saes={"s": sae}, interventions=[SAESplice(hook="resid_post.1", sae="s")])
    torch.testing.assert_close(exact.logits, clean, rtol=0, atol=0)


def test_function_edit_equals_a_plain_hook_and_sees_the_selected_positions(lm):
    batch = batch_of(lm)
    v = _vec(4)
    shapes = []

    def double_then_shift(x):
        shapes.append(tuple(x.shape))
        return x * 2 + v

    got = forward(lm.model, batch, interventions=[FunctionEdit(hook="mlp_out.1", fn=double_then_shift)]).logits
    torch.testing.assert_close(got, _with_hook(lm.model, batch, "model.layers.1.mlp", lambda x: x * 2 + v),
                               rtol=1e-5, atol=1e-5)
    assert shapes == [(*batch["input_ids"].shape, D)]
    shapes.clear()
    last = FunctionEdit(hook="mlp_out.1", fn=double_then_shift, positions="last")
    forward(lm.model, batch, interventions=[[last], None, [last]])
    assert shapes == [(2, 1, D)]
    with pytest.raises(InterventionError, match=r"fn must return a tensor of shape \[3, 1, 32\], got shape \[3, 32\]"):
        forward(lm.model, batch, interventions=[FunctionEdit(hook="mlp_out.1", positions="last",
                                                             fn=lambda x: x[:, 0])])


def test_function_edit_gradients_flow_like_a_declarative_edit(lm):
    batch = batch_of(lm)
    v = _vec(5)
    objective = {"kind": "logit", "token": 7}
    declared = attribute(lm.model, batch, ["resid_pre.1"], objective,
                         interventions=[Projection(hook="resid_post.1", direction=v.tolist(), mode="scale",
                                                   value=0.5)])
    u = v / v.norm()
    by_fn = attribute(lm.model, batch, ["resid_pre.1"], Objective(kind="logit", token=7),
                      interventions=[FunctionEdit(hook="resid_post.1", fn=lambda x: x - 0.5 * (x @ u)[..., None] * u)])
    torch.testing.assert_close(by_fn.gradients["resid_pre.1"], declared.gradients["resid_pre.1"], rtol=1e-5,
                               atol=1e-6)


def test_one_line_capture_with_a_tensor_batch_and_a_single_hook(lm):
    ids = batch_of(lm, ["The quick brown fox jumps"])["input_ids"]
    acts = capture(lm.model, ids[0], "resid_post.0")
    torch.testing.assert_close(acts["resid_post.0"], capture(lm.model, {"input_ids": ids}, ["resid_post.0"])[
        "resid_post.0"], rtol=0, atol=0)


def test_one_line_capture_and_steer_from_text_with_the_loaded_model(lm):
    text = "The quick brown fox jumps"
    acts = capture(lm, text, "resid_post.0")
    torch.testing.assert_close(acts["resid_post.0"], capture(lm.model, lm.tokenize([text]), "resid_post.0")[
        "resid_post.0"], rtol=0, atol=0)
    steered = forward(lm, [text, "Tokens"], interventions=AddVector(hook="resid_post.0", vector=_vec(7), scale=2.0))
    assert steered.logits.shape[0] == 2
    attr = attribute(lm, text, "resid_post.0", {"kind": "logit", "token": 3})
    assert attr.gradients["resid_post.0"].shape == acts["resid_post.0"].shape
    with pytest.raises(ValueError, match="batch: text needs a tokenizer"):
        capture(lm.model, text, "resid_post.0")
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module or a LoadedModel"):
        capture(object(), text, "resid_post.0")


def test_hook_points_are_in_execution_order(lm):
    order = []
    handles = [m.register_forward_hook(lambda _m, _a, _o, p=p: order.append(p))
               for p, m in lm.model.named_modules() if p]
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.zeros(1, 3, dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
    names = [p.name for p in hook_points(lm.model, include_modules=True)]
    canonical = set(canonical_names(lm.model))
    modules = [n for n in names if n not in canonical]
    firsts = list(dict.fromkeys(order))
    assert modules == [p for p in firsts if p in modules]
    at = names.index
    for i in range(3):
        # resid_mid exists once the attention output does: listed with it, canonical names first.
        assert at(f"resid_pre.{i}") < at(f"attn_out.{i}") < at(f"resid_mid.{i}") < at(f"model.layers.{i}.self_attn")
        assert at(f"model.layers.{i}.self_attn") < at(f"mlp_out.{i}") < at(f"model.layers.{i}.mlp")
        assert at(f"model.layers.{i}.mlp") < at(f"resid_post.{i}") < at(f"model.layers.{i}")
    assert names[0] == "model.embed_tokens" and at("embed") < at("model.layers.0.input_layernorm")
    assert at("final") < at("lm_head")


@pytest.fixture(scope="module")
def opt():
    from transformers import AutoModelForCausalLM, OPTConfig

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=64, hidden_size=D, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                       word_embed_proj_dim=D, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)


def test_flattened_token_activations_are_captured_and_edited_as_batch_seq_width(opt):
    ids = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    path = "model.decoder.layers.0.fc2"
    seen = {}
    module = opt.get_submodule(path)
    handle = module.register_forward_hook(lambda _m, _a, out: seen.setdefault("fc2", out.clone()))
    with torch.no_grad():
        opt(**batch)
    handle.remove()
    assert seen["fc2"].shape == (10, D)
    acts = capture(opt, batch, [path], positions="last")
    torch.testing.assert_close(acts[path], seen["fc2"].view(2, 5, D)[:, -1], rtol=0, atol=0)
    v = _vec(6)
    got = forward(opt, batch, interventions=[[AddVector(hook=path, vector=v, positions=[1])], []]).logits

    def manual(_m, _a, out):
        out = out.view(2, 5, D).clone()
        out[0, 1] += v
        return out.view(10, D)

    handle = module.register_forward_hook(manual)
    try:
        with torch.no_grad():
            expected = opt(**batch).logits
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert {p.name: p.shape for p in hook_points(opt, include_modules=True)}[path] == (D,)


def test_the_server_refuses_function_edits():
    from pydantic import ValidationError

    from interp_workloads.serve import schemas

    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        schemas.ForwardRequest.model_validate({"prompt": "x", "interventions": [{"kind": "function",
                                                                                 "hook": "embed"}]})
    with pytest.raises(ValidationError):
        schemas.ForwardRequest(prompt="x", interventions=[FunctionEdit(hook="embed", fn=lambda x: x)])
