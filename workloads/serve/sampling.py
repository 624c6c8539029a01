"""Next-token choice for one row: greedy, or temperature / top-k / top-p sampling from a per-request generator."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 16
    temperature: float = 1.0
    """0 (or below MIN_TEMPERATURE) is greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    """0: no top-k cut."""
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    """None: no logprobs; n >= 0: the chosen token's logprob and the n most likely alternatives."""
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = field(default=())


def filtered_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Scale by temperature and mask everything outside top-k and the top-p nucleus with -inf ([vocab] float32)."""
    scores = logits.float() / params.temperature
    if 0 < params.top_k < scores.shape[-1]:
        kth = scores.topk(params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = scores.sort(descending=True)
        probs = sorted_scores.softmax(-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        outside = probs.cumsum(-1) - probs >= params.top_p
        outside[0] = False
        scores = scores.scatter(-1, order, sorted_scores.masked_fill(outside, float("-inf")))
    return scores


# Below this temperature, sampling is greedy decoding (dividing by it would overflow float32).
MIN_TEMPERATURE = 1e-4


def choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    if params.temperature < MIN_TEMPERATURE:
        return int(logits.argmax())
    probs = filtered_logits(logits, params).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
