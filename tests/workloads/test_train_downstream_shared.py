"""The downstream metric shares work among SAEs and stays exact: each SAE's clean, spliced and zero-ablated losses
equal a forward of its own per SAE with plain PyTorch hooks, while the blocks before a hook run once per batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from interp_workloads.instrument import family_for
from interp_workloads.sae import CoderConfig, SparseCoder
from interp_workloads.testing import build_tiny_model
from interp_workloads.train.downstream import downstream_losses

D, LAYERS, DICT = 32, 3, 64
HOOKS = {"a": "resid_post.0", "b": "resid_post.0", "c": "resid_pre.1", "d": "mlp_out.1", "e": "resid_post.2",
         "f": "final", "g": "embed", "h": "resid_mid.1"}
# Blocks that run the same with the hook edited (the metric's reuse), written out from the hook names' meaning.
BLOCKS_BEFORE = {"resid_post.0": 1, "resid_pre.1": 1, "mlp_out.1": 1, "resid_post.2": 3, "final": 3, "embed": 0,
                 "resid_mid.1": 1}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tmp_path_factory) -> nn.Module:
    directory = build_tiny_model(request.param, tmp_path_factory.mktemp(request.param), n_layers=LAYERS, d_model=D)
    return AutoModelForCausalLM.from_pretrained(Path(directory)).eval()


def coders() -> dict[str, tuple[str, SparseCoder]]:
    torch.manual_seed(0)
    return {name: (hook, SparseCoder(CoderConfig(architecture="topk", d_in=D, d_sae=DICT, k=8)))
            for name, hook in HOOKS.items()}


def _first(value, new=None):
    if new is None:
        return value[0] if isinstance(value, tuple) else value
    return (new, *value[1:]) if isinstance(value, tuple) else new


def reference_loss(model: nn.Module, contexts: torch.Tensor, hook: str | None, replace=None) -> float:
    """Mean next-token loss of one whole forward with ``replace`` applied at ``hook`` by a plain hook."""
    family = family_for(model.config)
    handles = []
    if hook is not None:
        kind, _, layer = hook.partition(".")
        block = f"{family.blocks}.{layer}"
        if kind in ("resid_pre", "embed"):
            module = model.get_submodule(f"{family.blocks}.0" if kind == "embed" else block)

            def pre(_module, args, kwargs):
                if args:
                    return (replace(args[0]), *args[1:]), kwargs
                return args, kwargs | {"hidden_states": replace(kwargs["hidden_states"])}

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        elif kind == "resid_mid":
            # The stream after attention is the block's input plus the attention output: edit that sum.
            inputs = []
            handles.append(model.get_submodule(block).register_forward_pre_hook(
                lambda _m, args, kwargs: inputs.append(args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True))
            handles.append(model.get_submodule(f"{block}.{family.attn_out}").register_forward_hook(
                lambda _m, _a, output: _first(output, replace(_first(output) + inputs[-1]) - inputs[-1])))
        else:
            path = {"resid_post": block, "mlp_out": f"{block}.{family.mlp_out}", "final": family.final_norm}[kind]
            handles.append(model.get_submodule(path).register_forward_hook(
                lambda _m, _a, output: _first(output, replace(_first(output)))))
    try:
        with torch.no_grad():
            return float(model(input_ids=contexts, labels=contexts).loss)
    finally:
        for handle in handles:
            handle.remove()


def reconstruct(sae: SparseCoder, x: torch.Tensor) -> torch.Tensor:
    return sae.decode(sae.encode(x.reshape(-1, x.shape[-1]))).reshape(x.shape)


def attention_calls(model: nn.Module) -> tuple[list[int], list]:
    family = family_for(model.config)
    calls: list[int] = []
    blocks = model.get_submodule(family.blocks)
    handles = [block.get_submodule(family.attn_out).register_forward_hook(lambda *_: calls.append(1))
               for block in blocks]
    return calls, handles


def test_each_saes_losses_equal_its_own_forward_and_the_shared_blocks_run_once(model):
    contexts = torch.randint(0, model.config.vocab_size, (10, 12), generator=torch.Generator().manual_seed(1))
    saes = coders()
    calls, handles = attention_calls(model)
    try:
        losses = downstream_losses(model, contexts, saes, batch_size=4)
    finally:
        for handle in handles:
            handle.remove()

    clean = reference_loss(model, contexts, None)
    for name, (hook, sae) in saes.items():
        with torch.no_grad():
            spliced = reference_loss(model, contexts, hook, lambda x, sae=sae: reconstruct(sae, x))
        zeroed = reference_loss(model, contexts, hook, torch.zeros_like)
        got = losses[name]
        assert got.clean == pytest.approx(clean, abs=1e-5), name
        assert got.spliced == pytest.approx(spliced, abs=1e-5), name
        assert got.zero_ablated == pytest.approx(zeroed, abs=1e-5), name
        assert abs(got.spliced - clean) > 1e-4, name  # the splice moves the loss well past the tolerance

    batches = 3
    hooks = set(HOOKS.values())
    one_forward_each = batches * LAYERS * (1 + len(saes) + len(hooks))
    rerun = sum(LAYERS - BLOCKS_BEFORE[h] for h in HOOKS.values()) + sum(LAYERS - BLOCKS_BEFORE[h] for h in hooks)
    assert len(calls) == batches * (LAYERS + rerun) < one_forward_each
    # The blocks run again afterwards: nothing of the reuse is left behind.
    assert all("forward" not in vars(block) for block in model.get_submodule(family_for(model.config).blocks))
    assert reference_loss(model, contexts, None) == clean
