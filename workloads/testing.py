"""Tiny random-weight models of each supported family, saved in Hugging Face format for tests and demos.

Everything is built offline: the config with random weights (saved as safetensors) and a byte-level BPE tokenizer
trained in milliseconds on a small built-in corpus. Load the result with :func:`interp_workloads.models.load_model`.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CORPUS = (
    "The quick brown fox jumps over the lazy dog. A sparse autoencoder reads the residual stream and writes it "
    "back as a sum of a few features. Steering vectors move the activations of a model along one direction. "
    "Interpretability research asks which features a language model uses to predict the next token. "
    "Attribution multiplies an activation by the gradient of a logit with respect to it. "
    "Kubernetes schedules pods onto nodes; an operator reconciles the desired state of custom resources. "
    "Tokens, layers, heads and neurons: every part of a transformer can be recorded, edited or ablated. "
    "0123456789 + - * / = ( ) [ ] { } , ; : ! ? ' \" "
)

SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}

TINY_FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "gpt_neox", "gemma", "gemma2")


def build_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([CORPUS] * 4, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, **SPECIAL_TOKENS)


def tiny_config(family: str, vocab_size: int, *, n_layers: int = 2, d_model: int = 32,
                special: dict[str, int] | None = None) -> Any:
    heads = 4
    ids = special or {}
    common: dict[str, Any] = dict(vocab_size=vocab_size, bos_token_id=ids.get("bos"), eos_token_id=ids.get("eos"),
                                  pad_token_id=ids.get("pad"))
    llama_like: dict[str, Any] = dict(common, hidden_size=d_model, intermediate_size=2 * d_model,
                                      num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=2,
                                      max_position_embeddings=128)
    if family == "gpt2":
        return GPT2Config(**common, n_embd=d_model, n_layer=n_layers, n_head=heads, n_positions=128)
    if family == "llama":
        return LlamaConfig(**llama_like)
    if family == "mistral":
        return MistralConfig(**llama_like, sliding_window=64)
    if family == "qwen2":
        return Qwen2Config(**llama_like)
    if family == "gemma":
        return GemmaConfig(**llama_like, head_dim=d_model // heads)
    if family == "gemma2":
        return Gemma2Config(**llama_like, head_dim=d_model // heads, sliding_window=64)
    if family == "gpt_neox":
        return GPTNeoXConfig(**common, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
                             num_attention_heads=heads, max_position_embeddings=128)
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")


def build_tiny_model(family: str, directory: str | os.PathLike[str], *, n_layers: int = 2, d_model: int = 32,
                     seed: int = 0, **config_overrides: Any) -> Path:
    """Write a random-weight ``family`` model (safetensors) and its tokenizer to ``directory``; return the path."""
    out = Path(directory)
    tokenizer = build_tokenizer()
    special = {name: tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[f"{name}_token"]) for name in ("bos", "eos", "pad")}
    config = tiny_config(family, len(tokenizer), n_layers=n_layers, d_model=d_model, special=special)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def write_corpus(path: str | os.PathLike[str], documents: int, *, min_words: int = 3, max_words: int = 60,
                 seed: int = 0) -> Path:
    """A jsonl corpus (``{"text": ...}`` per line) of documents of random words of :data:`CORPUS`."""
    out, rng, words = Path(path), random.Random(seed), CORPUS.split()
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(min_words, max_words)))})
             for _ in range(documents)]
    out.write_text("\n".join(lines) + "\n")
    return out
