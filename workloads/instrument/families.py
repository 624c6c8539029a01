"""Where each model family keeps its blocks, and which module carries each canonical hook point.

Canonical names mean the same tensor in every family (all tensors are ``[batch, seq, d_model]``):

- ``resid_pre.i``: the residual stream entering block ``i`` (the block's ``hidden_states`` input).
- ``embed``: the same tensor as ``resid_pre.0``: token embeddings after everything the family adds before the
  first block (GPT-2's position embeddings, Gemma's sqrt(d_model) scaling). It equals ``hidden_states[0]``.
- ``resid_mid.i``: the residual stream after the attention contribution, before the MLP reads it: the block's own
  sum ``resid_pre.i + attn_out.i``, which feeds both the MLP and the skip connection. Missing in blocks with a
  parallel residual (GPT-NeoX/Pythia with ``use_parallel_residual``), where it does not exist.
- ``attn_out.i`` / ``mlp_out.i``: exactly what the attention / MLP adds to the residual stream, so
  ``resid_post.i == resid_pre.i + attn_out.i + mlp_out.i``. In Gemma 2/3 that is the output of the norm that
  follows the sublayer, not the raw sublayer output.
- ``resid_post.i``: the residual stream leaving block ``i`` (``hidden_states[i + 1]`` for all but the last block).
- ``final``: the output of the final norm, the input of the unembedding (``hidden_states[-1]`` in transformers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """Module paths of one architecture; sub-paths are relative to a block."""

    name: str
    model_types: tuple[str, ...]
    blocks: str
    final_norm: str
    attn_out: str
    mlp_out: str
    # The first module to read the block's input (its pre-attention norm): its input is the tensor the block keeps
    # for the skip connection, seen after every edit of resid_pre. resid_mid is attn_out plus that tensor.
    input_norm: str
    # A config flag that, when true, makes the block parallel (no resid_mid).
    parallel_flag: str | None = None

    def has_resid_mid(self, config: Any) -> bool:
        return not (self.parallel_flag and getattr(config, self.parallel_flag, False))


_LLAMA_LIKE = dict(
    blocks="model.layers",
    final_norm="model.norm",
    attn_out="self_attn",
    mlp_out="mlp",
    input_norm="input_layernorm",
)

FAMILIES: tuple[Family, ...] = (
    Family("gpt2", ("gpt2",), "transformer.h", "transformer.ln_f", "attn", "mlp", "ln_1"),
    Family("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma"), **_LLAMA_LIKE),
    # Gemma 2/3 normalise each sublayer's output before adding it to the residual stream.
    Family(
        "gemma2",
        ("gemma2", "gemma3_text"),
        blocks="model.layers",
        final_norm="model.norm",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
        input_norm="input_layernorm",
    ),
    # The dropout modules are identities at eval time; hooking them yields exactly what is added to the residual.
    Family(
        "gpt_neox",
        ("gpt_neox",),
        blocks="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        attn_out="post_attention_dropout",
        mlp_out="post_mlp_dropout",
        input_norm="input_layernorm",
        parallel_flag="use_parallel_residual",
    ),
)

_BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}


class UnsupportedModelError(ValueError):
    pass


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(config: Any) -> Family:
    model_type = getattr(config, "model_type", None)
    family = _BY_MODEL_TYPE.get(model_type)  # type: ignore[arg-type]
    if family is None:
        raise UnsupportedModelError(
            f"model_type {model_type!r} has no hook-point adapter; supported: {', '.join(supported_model_types())}"
            " (module paths such as 'model.layers.0.mlp' still work through the module-path hook names)"
        )
    return family
