"""Interventions against the same edit written by hand as a plain PyTorch hook."""

from __future__ import annotations

import pytest
import torch
from wl_helpers import batch_of, hook_counts

from interp_workloads.instrument import InterventionError, SparseAutoencoder, capture, forward
from interp_workloads.spec import (
    Ablation,
    AddVector,
    FeatureEdit,
    PositionSlice,
    Projection,
    Replace,
    SAESplice,
)
from interp_workloads.spec.sae import SAEConfig

D = 32


def _vec(seed: int, scale: float = 1.0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(D, generator=g) * scale).tolist()


def reference_logits(lm, batch, module_path, edit_fn, *, output=True):
    """Logits with ``edit_fn(tensor) -> tensor`` applied by a hand-written hook on one module."""
    module = lm.model.get_submodule(module_path)
    if output:
        def hook(_m, _a, out):
            return (edit_fn(out[0]), *out[1:]) if isinstance(out, tuple) else edit_fn(out)
        handle = module.register_forward_hook(hook)
    else:
        def pre(_m, args, kwargs):
            return (edit_fn(args[0]), *args[1:]), kwargs
        handle = module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            return lm.model(**batch).logits
    finally:
        handle.remove()


def _at(positions, seq_len, last_row):
    if positions == "all":
        return list(range(seq_len))
    if positions == "last":
        return [last_row]
    if isinstance(positions, PositionSlice):
        return list(range(seq_len))[positions.start : positions.stop]
    return [p % seq_len for p in positions]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
@pytest.mark.parametrize("positions", ["all", "last", PositionSlice(start=1, stop=3), [0, -1]])
def test_steering_vector_equals_manual_addition(tiny_model, family, positions):
    lm = tiny_model(family)
    batch = batch_of(lm)
    vector, scale = _vec(1), 2.5
    last = (batch["attention_mask"].sum(1) - 1).tolist()
    block = f"{lm.family.blocks}.1"

    def manual(x):
        x = x.clone()
        v = torch.tensor(vector)
        for row in range(x.shape[0]):
            for p in _at(positions, x.shape[1], last[row]):
                x[row, p] = x[row, p] + scale * v
        return x

    expected = reference_logits(lm, batch, block, manual)
    edit = AddVector(hook="resid_post.1", vector=vector, scale=scale, positions=positions)
    got = forward(lm.model, batch, interventions=[[edit]] * 3).logits
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, forward(lm.model, batch).logits)


@pytest.mark.parametrize(("mode", "value"), [("set", 3.0), ("scale", -0.5), ("zero", 0.0)])
def test_projection_edits_the_component_along_the_direction(llama, mode, value):
    batch = batch_of(llama)
    direction = _vec(2, scale=5.0)
    u = torch.tensor(direction) / torch.tensor(direction).norm()
    clean = capture(llama.model, batch, ["resid_mid.1"])["resid_mid.1"]
    edit = Projection(hook="resid_mid.1", direction=direction, mode=mode, value=value)
    result = forward(llama.model, batch, interventions=[[edit]] * 3, hooks=["resid_mid.1"])
    coef_before, coef_after = clean @ u, result.activations["resid_mid.1"] @ u
    target = {"set": torch.full_like(coef_before, 3.0), "scale": -0.5 * coef_before,
              "zero": torch.zeros_like(coef_before)}[mode]
    torch.testing.assert_close(coef_after, target, rtol=1e-5, atol=1e-5)
    # The orthogonal complement is untouched.
    torch.testing.assert_close(result.activations["resid_mid.1"] - coef_after[..., None] * u,
                               clean - coef_before[..., None] * u, rtol=1e-5, atol=1e-5)
    # The reference edits the residual stream itself: block 1's output recomputed from the edited stream.
    block = llama.model.model.layers[1]
    seen = {}
    handles = [
        block.register_forward_pre_hook(lambda _m, args, kwargs: seen.__setitem__(
            "pre", args[0] if args else kwargs["hidden_states"]), with_kwargs=True),
        block.self_attn.register_forward_hook(lambda _m, _a, out: seen.__setitem__("attn", out[0])),
    ]

    def recompute(_m, _a, _out):
        mid = seen["pre"] + seen["attn"]
        mid = mid + (target - mid @ u)[..., None] * u
        return mid + block.mlp(block.post_attention_layernorm(mid))

    handles.append(block.register_forward_hook(recompute))
    try:
        with torch.no_grad():
            expected = llama.model(**batch).logits
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(result.logits, expected, rtol=1e-5, atol=1e-5)


def test_zero_and_mean_ablation(llama):
    batch = batch_of(llama)
    mean = _vec(3)
    for edit, fill in [(Ablation(hook="mlp_out.0", mode="zero"), torch.zeros(D)),
                       (Ablation(hook="mlp_out.0", mode="mean", mean=mean), torch.tensor(mean))]:
        result = forward(llama.model, batch, interventions=[[edit]] * 3, hooks=["mlp_out.0"])
        assert torch.equal(result.activations["mlp_out.0"], fill.expand(3, batch["input_ids"].shape[1], D))
        expected = reference_logits(llama, batch, "model.layers.0.mlp", lambda x, fill=fill: fill.expand_as(x))
        torch.testing.assert_close(result.logits, expected, rtol=1e-6, atol=1e-6)


def test_replace_with_one_row_per_position_or_a_broadcast_row(llama):
    batch = batch_of(llama)
    rows = [_vec(4), _vec(5)]
    per_position = Replace(hook="resid_post.0", values=rows, positions=[1, 2])
    broadcast = Replace(hook="resid_post.0", values=[rows[0]], positions=PositionSlice(stop=2))
    got = forward(llama.model, batch, interventions=[[per_position], [broadcast], []], hooks=["resid_post.0"])
    clean = capture(llama.model, batch, ["resid_post.0"])["resid_post.0"]
    act = got.activations["resid_post.0"]
    torch.testing.assert_close(act[0, 1:3], torch.tensor(rows))
    torch.testing.assert_close(act[1, :2], torch.tensor([rows[0]] * 2))
    torch.testing.assert_close(act[2], clean[2], rtol=0, atol=0)
    torch.testing.assert_close(act[0, 3:], clean[0, 3:], rtol=0, atol=0)
    bad = Replace(hook="resid_post.0", values=rows, positions=[0, 1, 2])
    with pytest.raises(InterventionError, match="2 rows of values for 3 selected positions"):
        forward(llama.model, batch, interventions=[[bad], [], []])


@pytest.fixture(scope="module", params=["relu", "topk", "jumprelu"])
def sae(request, tmp_path_factory):
    config = SAEConfig(d_in=D, d_sae=128, activation=request.param, k=8 if request.param == "topk" else None)
    sae = SparseAutoencoder(config)
    sae.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
        if request.param == "jumprelu":
            sae.threshold.fill_(0.1)
    return SparseAutoencoder.load(sae.save(tmp_path_factory.mktemp("sae")))


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_unedited_sae_splice_leaves_logits_unchanged(tiny_model, family, sae):
    lm = tiny_model(family)
    batch = batch_of(lm)
    clean = forward(lm.model, batch).logits
    splice = SAESplice(hook="resid_post.1", sae="s")
    got = forward(lm.model, batch, interventions=[[splice]] * 3, saes={"s": sae}).logits
    torch.testing.assert_close(got, clean, rtol=0, atol=0)
    # The SAE itself is lossy, so a plain reconstruction (without the error term) would move the logits.
    lossy = reference_logits(lm, batch, f"{lm.family.blocks}.1", lambda x: sae(x))
    assert not torch.allclose(lossy, clean, atol=1e-3)


def test_edited_sae_splice_equals_manual_feature_edit(llama, sae):
    batch = batch_of(llama)
    edits = [FeatureEdit(feature=3, op="clamp", value=4.0), FeatureEdit(feature=7, op="scale", value=3.0),
             FeatureEdit(feature=11, op="zero")]

    def manual(x):
        z = sae.encode(x)
        z2 = z.clone()
        z2[..., 3] = 4.0
        z2[..., 7] *= 3.0
        z2[..., 11] = 0.0
        out = x.clone()
        out[:, -2:] = (x + sae.decode(z2) - sae.decode(z))[:, -2:]
        return out

    expected = reference_logits(llama, batch, "model.layers.0", manual)
    splice = SAESplice(hook="resid_post.0", sae="s", edits=edits, positions=PositionSlice(start=-2))
    got = forward(llama.model, batch, interventions=[[splice]] * 3, saes={"s": sae}).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_interventions_compose_in_order(llama):
    batch = batch_of(llama)
    vector, direction = _vec(6), _vec(7)
    u = torch.tensor(direction) / torch.tensor(direction).norm()
    edits = [AddVector(hook="resid_post.0", vector=vector, scale=3.0),
             Projection(hook="resid_post.0", direction=direction, mode="zero"),
             AddVector(hook="attn_out.2", vector=vector, positions="last")]
    result = forward(llama.model, batch, interventions=[edits] * 3, hooks=["resid_post.0"])
    act = result.activations["resid_post.0"]
    torch.testing.assert_close(act @ u, torch.zeros(act.shape[:2]), rtol=0, atol=1e-5)

    def manual(x):
        x = x + 3.0 * torch.tensor(vector)
        return x - (x @ u)[..., None] * u

    expected_act = manual(capture(llama.model, batch, ["resid_post.0"])["resid_post.0"])
    torch.testing.assert_close(act, expected_act, rtol=1e-5, atol=1e-5)


def test_each_row_gets_its_own_interventions(tiny_model, sae):
    lm = tiny_model("llama")
    texts = ["The quick brown fox jumps", "Steering vectors move the activations", "Tokens, layers, heads"]
    per_row = [
        [AddVector(hook="resid_post.0", vector=_vec(8), scale=4.0)],
        [Projection(hook="resid_mid.1", direction=_vec(9), mode="set", value=2.0, positions="last"),
         SAESplice(hook="resid_post.1", sae="s", edits=[FeatureEdit(feature=1, op="clamp", value=5.0)])],
        [],
    ]
    batch = lm.tokenize(texts)
    together = forward(lm.model, batch, interventions=per_row, saes={"s": sae}, hooks=["resid_post.2"])
    for row, text in enumerate(texts):
        alone = forward(lm.model, lm.tokenize([text]), interventions=[per_row[row]], saes={"s": sae},
                        hooks=["resid_post.2"])
        n = alone.logits.shape[1]
        torch.testing.assert_close(together.logits[row, :n], alone.logits[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(together.activations["resid_post.2"][row, :n], alone.activations["resid_post.2"][0],
                                   rtol=1e-5, atol=1e-5)
    clean = forward(lm.model, batch).logits
    torch.testing.assert_close(together.logits[2], clean[2], rtol=0, atol=0)
    assert not torch.allclose(together.logits[0], clean[0])


@pytest.mark.parametrize(
    ("interventions", "saes", "message"),
    [
        ([[]], {}, "interventions for 1 rows but the batch has 3"),
        ([[SAESplice(hook="resid_post.0", sae="missing")], [], []], {}, "SAE 'missing' is not loaded"),
        ([[AddVector(hook="resid_post.9", vector=[1.0])], [], []], {}, "the model has 3 layers"),
        ([[Projection(hook="resid_post.0", direction=[1.0, 0.0], mode="zero")], [], []], {}, "has 2 values"),
        ([[AddVector(hook="resid_post.0", vector=[1.0] * D, positions=[40])], [], []], {}, "outside a sequence"),
    ],
)
def test_mismatched_interventions_fail_clearly_and_leave_no_hooks(llama, interventions, saes, message):
    before = hook_counts(llama.model)
    with pytest.raises(ValueError, match=message):
        forward(llama.model, batch_of(llama), interventions=interventions, saes=saes)
    assert hook_counts(llama.model) == before


def test_sae_width_and_feature_range_are_checked(llama, sae):
    batch = batch_of(llama)
    with pytest.raises(InterventionError, match="has 128 features; got feature 500"):
        forward(llama.model, batch, saes={"s": sae},
                interventions=[[SAESplice(hook="resid_post.0", sae="s", edits=[FeatureEdit(feature=500, op="zero")])],
                               [], []])
    with pytest.raises(InterventionError, match="reads width 32 but hook lm_head has width"):
        forward(llama.model, batch, saes={"s": sae}, interventions=[[SAESplice(hook="lm_head", sae="s")], [], []])
