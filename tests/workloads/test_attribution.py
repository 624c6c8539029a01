"""Gradients and activation x gradient against torch.autograd.grad computed by hand."""

from __future__ import annotations

import pytest
import torch
from wl_helpers import batch_of, hook_counts

from interp_workloads.instrument import attribute
from interp_workloads.spec import AddVector, Objective

TOKENS = [5, 17, 42]


def manual_gradients(lm, batch, module_paths, scalar_fn):
    """Keep each block's output tensor via plain hooks, then differentiate ``scalar_fn(logits)`` by hand."""
    kept = {}
    handles = []
    for path in module_paths:
        def keep(_m, _a, out, path=path):
            kept[path] = out[0] if isinstance(out, tuple) else out
        handles.append(lm.model.get_submodule(path).register_forward_hook(keep))
    lm.model.requires_grad_(True)
    try:
        logits = lm.model(**batch).logits
        grads = torch.autograd.grad(scalar_fn(logits), [kept[p] for p in module_paths])
    finally:
        lm.model.requires_grad_(False)
        for handle in handles:
            handle.remove()
    return {p: (kept[p].detach(), g) for p, g in zip(module_paths, grads, strict=True)}


def _last(batch):
    return batch["attention_mask"].sum(1) - 1


def _scalar(kind, batch):
    rows = torch.arange(3)
    last = _last(batch)
    if kind == "logit":
        return lambda logits: logits[rows, last, TOKENS].sum()
    if kind == "logprob":
        return lambda logits: torch.log_softmax(logits[rows, last], -1)[rows, TOKENS].sum()

    def loss(logits):
        mask = batch["attention_mask"]
        total = logits.new_zeros(())
        for r in range(3):
            n = int(mask[r].sum())
            total = total + torch.nn.functional.cross_entropy(logits[r, : n - 1], batch["input_ids"][r, 1:n])
        return total

    return loss


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
@pytest.mark.parametrize("kind", ["logit", "logprob", "loss"])
def test_gradients_match_autograd_by_hand(tiny_model, family, kind):
    lm = tiny_model(family)
    batch = batch_of(lm)
    blocks = [f"{lm.family.blocks}.{i}" for i in (0, 1)]
    objective = Objective(kind=kind, token=TOKENS) if kind != "loss" else Objective(kind="loss")
    before = hook_counts(lm.model)
    result = attribute(lm.model, batch, ["resid_post.0", "resid_post.1", "embed"], objective)
    assert hook_counts(lm.model) == before
    expected = manual_gradients(lm, batch, blocks, _scalar(kind, batch))
    for i, path in enumerate(blocks):
        act, grad = expected[path]
        torch.testing.assert_close(result.activations[f"resid_post.{i}"], act, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result.gradients[f"resid_post.{i}"], grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result.attribution[f"resid_post.{i}"], (act * grad).sum(-1), rtol=1e-4, atol=1e-6)
    assert result.attribution["embed"].shape == batch["input_ids"].shape
    assert result.objective.shape == (3,)
    # No parameter gradients are left behind.
    assert all(p.grad is None for p in lm.model.parameters())


def test_objective_values_and_causal_zero_gradients(llama):
    batch = batch_of(llama)
    result = attribute(llama.model, batch, ["resid_pre.2"], Objective(kind="logit", token=7, position=1))
    with torch.no_grad():
        logits = llama.model(**batch).logits
    torch.testing.assert_close(result.objective, logits[:, 1, 7])
    grad = result.gradients["resid_pre.2"]
    # A causal model: position 1's logit cannot depend on later positions.
    assert torch.count_nonzero(grad[:, 2:]) == 0
    assert torch.count_nonzero(grad[:, :2]) > 0


def test_rows_get_their_own_gradients(llama):
    texts = ["The quick brown fox jumps", "Attribution multiplies an activation", "Tokens"]
    batch = llama.tokenize(texts)
    objective = Objective(kind="logprob", token=TOKENS)
    together = attribute(llama.model, batch, ["resid_post.1"], objective)
    for row, text in enumerate(texts):
        alone = attribute(llama.model, llama.tokenize([text]), ["resid_post.1"],
                          Objective(kind="logprob", token=TOKENS[row]))
        n = alone.gradients["resid_post.1"].shape[1]
        torch.testing.assert_close(together.gradients["resid_post.1"][row, :n], alone.gradients["resid_post.1"][0],
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.objective[row], alone.objective[0], rtol=1e-5, atol=1e-6)


def test_gradients_through_an_intervention(llama):
    batch = batch_of(llama)
    steer = AddVector(hook="resid_post.0", vector=[0.5] * 32, scale=2.0)
    objective = Objective(kind="logit", token=TOKENS)
    steered = attribute(llama.model, batch, ["resid_post.0", "resid_post.1"], objective,
                        interventions=[[steer]] * 3)
    clean = attribute(llama.model, batch, ["resid_post.0"], objective)
    # The recorded activation is the steered one: what the rest of the model saw.
    torch.testing.assert_close(steered.activations["resid_post.0"], clean.activations["resid_post.0"] + 1.0)
    assert not torch.allclose(steered.objective, clean.objective)


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        (Objective(kind="logit", token=[1, 2]), "2 tokens for a batch of 3 rows"),
        (Objective(kind="logit", token=100_000), "outside the vocabulary"),
        (Objective(kind="logprob", token=1, position=50), "outside a sequence"),
    ],
)
def test_bad_objectives(llama, objective, message):
    with pytest.raises(ValueError, match=message):
        attribute(llama.model, batch_of(llama), ["resid_post.0"], objective)
