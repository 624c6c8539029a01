"""Load a causal LM and its tokenizer in Hugging Face format (safetensors only) from a directory or a hub id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .instrument.families import Family, UnsupportedModelError, family_for
from .spec import ModelSpec

_DTYPES: dict[str, Any] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                           "auto": "auto"}


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: Any
    family: Family | None  # None: no canonical hook names, module paths only
    spec: ModelSpec

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Right-padded batch on the model's device (right padding keeps every row's positions unchanged)."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=max_length is not None,
                             max_length=max_length)
        device = self.model.device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load in eval mode with gradients off for the weights (activations can still be differentiated).

    Only safetensors weights are accepted (no pickle); remote code runs only when the spec allows it;
    with ``HF_HUB_OFFLINE=1`` nothing is fetched.
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    common: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code,
                              "local_files_only": offline}
    model = AutoModelForCausalLM.from_pretrained(
        spec.model, dtype=_DTYPES[spec.dtype], use_safetensors=True, attn_implementation=spec.attn_implementation,
        **common,
    )
    try:
        family: Family | None = family_for(model.config)
    except UnsupportedModelError:
        family = None
    model.to(_device(spec.device)).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(spec.model, **common)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return LoadedModel(model=model, tokenizer=tokenizer, family=family, spec=spec)
