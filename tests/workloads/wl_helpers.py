"""Shared constants and assertions for the workloads tests (a unique name: conftest modules collide)."""

from __future__ import annotations

import torch

from interp_workloads.models import LoadedModel

FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "gpt_neox", "gemma", "gemma2")
TEXTS = ["The quick brown fox jumps", "Steering vectors move the activations of a model", "Tokens"]


def batch_of(lm: LoadedModel, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    return lm.tokenize(texts)


def hook_counts(model: torch.nn.Module) -> dict[str, int]:
    """Hooks per module (transformers installs its own recorders lazily, so compare before/after, not to zero)."""
    return {name: len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for name, m in model.named_modules()}
