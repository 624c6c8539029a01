"""Forward capture: positions, dtype, early stop, and hooks that never outlive a call."""

from __future__ import annotations

import pytest
import torch
from wl_helpers import batch_of, hook_counts

from interp_workloads.instrument import InterventionError, capture, capture_from_spec, last_positions
from interp_workloads.spec import AddVector, CaptureSpec, PositionSlice

HOOKS = ["resid_pre.1", "attn_out.1", "resid_post.1", "model.layers.0.mlp"]


def test_positions_select_from_the_full_capture(llama):
    batch = batch_of(llama)
    full = capture(llama.model, batch, HOOKS)
    last = last_positions(batch["attention_mask"])
    lengths = batch["attention_mask"].sum(1)
    assert torch.equal(last, lengths - 1)  # right padding: the last real token
    rows = torch.arange(len(last))
    for positions, expected in [
        ("last", lambda t: t[rows, last]),
        (PositionSlice(start=1, stop=3), lambda t: t[:, 1:3]),
        (PositionSlice(start=-2), lambda t: t[:, -2:]),
        ([0, -1, 2], lambda t: t[:, [0, t.shape[1] - 1, 2]]),
    ]:
        got = capture(llama.model, batch, HOOKS, positions=positions)
        for name in HOOKS:
            torch.testing.assert_close(got[name], expected(full[name]), rtol=0, atol=0)


def test_last_position_with_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    assert last_positions(mask).tolist() == [3, 3, 3]
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert last_positions(right).tolist() == [1, 3, 0]


def test_position_subsets_do_not_keep_the_full_activation_alive(llama):
    got = capture(llama.model, batch_of(llama), ["resid_post.0"], positions="last")["resid_post.0"]
    assert got.untyped_storage().nbytes() == got.numel() * got.element_size()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_cast(llama, dtype):
    batch = batch_of(llama)
    full = capture(llama.model, batch, HOOKS)
    cast = capture(llama.model, batch, HOOKS, dtype=dtype)
    for name in HOOKS:
        assert cast[name].dtype == getattr(torch, dtype)
        torch.testing.assert_close(cast[name], full[name].to(getattr(torch, dtype)), rtol=0, atol=0)


def test_captured_tensors_carry_no_graph(llama):
    llama.model.requires_grad_(True)
    try:
        acts = capture(llama.model, batch_of(llama), HOOKS)
    finally:
        llama.model.requires_grad_(False)
    assert all(t.grad_fn is None and not t.requires_grad for t in acts.values())


def _calls_per_module(model, paths):
    """Count how often each module is entered (a pre-hook: the stop may come from inside a block)."""
    calls = dict.fromkeys(paths, 0)
    handles = []
    for path in paths:
        def count(_m, _a, path=path):
            calls[path] += 1
        handles.append(model.get_submodule(path).register_forward_pre_hook(count))
    return calls, handles


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "gemma2"])
def test_early_stop_skips_later_layers_and_changes_nothing(tiny_model, family):
    lm = tiny_model(family)
    batch = batch_of(lm)
    names = ["embed", "resid_post.0", "attn_out.1"]
    full = capture(lm.model, batch, names, stop_early=False)
    blocks = [f"{lm.family.blocks}.{i}" for i in range(3)]
    calls, handles = _calls_per_module(lm.model, [*blocks, lm.family.final_norm, "lm_head"])
    try:
        early = capture(lm.model, batch, names, stop_early=True)
        assert calls == {blocks[0]: 1, blocks[1]: 1, blocks[2]: 0, lm.family.final_norm: 0, "lm_head": 0}
        for c in calls:
            calls[c] = 0
        capture(lm.model, batch, names, stop_early=False)
        assert set(calls.values()) == {1}
    finally:
        for handle in handles:
            handle.remove()
    for name in names:
        torch.testing.assert_close(early[name], full[name], rtol=0, atol=0)


def test_final_and_module_paths_outside_the_base_model(llama):
    batch = batch_of(llama)
    acts = capture(llama.model, batch, ["final", "lm_head"])
    with torch.no_grad():
        logits = llama.model(**batch).logits
    torch.testing.assert_close(acts["lm_head"], logits, rtol=0, atol=0)
    torch.testing.assert_close(llama.model.lm_head(acts["final"]), logits)


def test_hooks_are_removed_when_the_pass_raises(llama):
    batch = batch_of(llama)
    before = hook_counts(llama.model)
    wrong_width = AddVector(hook="resid_post.1", vector=[1.0] * 7)
    with pytest.raises(InterventionError, match="has 7 values but the hook has width 32"):
        capture(llama.model, batch, HOOKS, interventions=[[wrong_width], [], []])
    assert hook_counts(llama.model) == before
    # And the next call is unaffected by the failed one.
    torch.testing.assert_close(capture(llama.model, batch, HOOKS)["resid_post.1"],
                               capture(llama.model, batch, ["resid_post.1"])["resid_post.1"], rtol=0, atol=0)


def test_capture_reports_bad_positions(llama):
    with pytest.raises(InterventionError, match="outside a sequence of length"):
        capture(llama.model, batch_of(llama), HOOKS, positions=[0, 99])


def test_capture_from_a_serialised_spec(llama):
    batch = batch_of(llama)
    spec = CaptureSpec.model_validate_json(
        '{"hooks": ["resid_post.0", "mlp_out.1"], "positions": {"start": 1}, "dtype": "bfloat16"}')
    got = capture_from_spec(llama.model, batch, spec)
    want = capture(llama.model, batch, spec.hooks, positions=PositionSlice(start=1), dtype="bfloat16")
    for name in spec.hooks:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
        assert got[name].dtype == torch.bfloat16
