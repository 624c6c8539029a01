"""The batch scheduler: continuous batching over one KV cache, with each row's own interventions.

Requests join and leave the running batch between decode steps. The requests joining at one step are prefilled
together in one right-padded pass, then their cache rows are merged into the batch cache; rows of different
lengths share one cache whose unused columns are masked out (an attention mask with holes) while each row keeps
its true position ids. Every forward call edits each row at the positions its interventions name (see
:mod:`.positions`), so steering applies to the prompt and to every generated token alike. Decode steps reuse hooks
that stay registered while the batch runs and edit functions resolved once for many steps (see :mod:`.row_edits`):
per step, steering costs one add per edited site.

The engine is synchronous and single-threaded on purpose: the model (and its hooks) belong to whoever calls
:meth:`Engine.step`. :mod:`.worker` runs it on a thread and feeds it requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from ..instrument import hooks_installed, resolve
from ..instrument.runtime import StandingHooks
from ..instrument.sae import SAE
from ..spec import Intervention
from .row_edits import DecodeEdits, RowEdits, prompt_fns
from .sampling import MIN_TEMPERATURE, SamplingParams, choose


@dataclass
class TokenEvent:
    """One generated token (``token`` is None for a finish without a new token), with the text it completes."""

    token: int | None
    text: str
    logprob: float | None = None
    top_logprobs: dict[int, float] | None = None
    finish_reason: str | None = None
    """None while generating; then "stop" (EOS or a stop string), "length", "cancelled" or "error"."""


@dataclass
class GenerationRequest:
    prompt: list[int]
    params: SamplingParams
    interventions: Sequence[Intervention] = ()
    on_event: Callable[[TokenEvent], None] = lambda event: None
    cancelled: bool = False
    """Set from any thread; the engine drops the row before its next step."""
    id: int = field(default_factory=itertools.count().__next__)


@dataclass
class _Row:
    request: GenerationRequest
    edits: RowEdits
    generator: torch.Generator | None
    length: int = 0
    """Real tokens in the cache: also the position id of the next token fed in."""
    generated: list[int] = field(default_factory=list)
    emitted: int = 0
    """Characters of the decoded output already sent."""
    next_token: int = -1


def _model_inputs(model: nn.Module, **kwargs: Any) -> Any:
    return model(**kwargs, use_cache=True)


class Engine:
    def __init__(self, model: nn.Module, tokenizer: Any, saes: Mapping[str, SAE] | None = None, *,
                 max_batch_tokens: int = 8192, max_batch_size: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.saes = dict(saes or {})
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos or 0)
        self.waiting: list[GenerationRequest] = []
        self.rows: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self._decode_edits = DecodeEdits(self.saes)
        self._hooks = StandingHooks(model)

    # -- submission -----------------------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request (already validated: hooks, widths and SAE names fit this model)."""
        self.waiting.append(request)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.rows)

    def batch_tokens(self) -> int:
        return sum(r.length + 1 for r in self.rows)

    # -- the loop -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> int:
        """Drop cancelled rows, admit waiting requests that fit, then run one decode step; return tokens made."""
        self._drop([r for r in self.rows if r.request.cancelled], "cancelled")
        made = self._admit()
        if self.rows:
            made += self._decode()
        return made

    def _admit(self) -> int:
        joining: list[GenerationRequest] = []
        budget = self.batch_tokens()
        while self.waiting and len(self.rows) + len(joining) < self.max_batch_size:
            request = self.waiting[0]
            if request.cancelled or request.params.max_new_tokens == 0:
                self.waiting.pop(0)
                request.on_event(TokenEvent(None, "", finish_reason="cancelled" if request.cancelled else "length"))
                continue
            need = len(request.prompt) + request.params.max_new_tokens
            if (self.rows or joining) and budget + need > self.max_batch_tokens:
                break
            budget += need
            joining.append(self.waiting.pop(0))
        return self._prefill(joining) if joining else 0

    def _prefill(self, requests: list[GenerationRequest]) -> int:
        """One pass over the joining prompts, right-padded (padding never precedes a real token of its row)."""
        rows = [self._row(r) for r in requests]
        lengths = [len(r.prompt) for r in requests]
        width = max(lengths)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, request in enumerate(requests):
            ids[i, : lengths[i]] = torch.tensor(request.prompt)
            mask[i, : lengths[i]] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        position_ids = torch.arange(width, device=self.device).expand(len(rows), width)
        cache = DynamicCache()
        with hooks_installed(self.model, prompt_fns([r.edits for r in rows], width, self.saes)):
            out = _model_inputs(self.model, input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                cache=cache)
        for row, n in zip(rows, lengths, strict=True):
            row.length = n
        self._merge(rows, out.cache, mask)
        last = torch.tensor(lengths, device=self.device) - 1
        return self._advance(rows, out.logits[torch.arange(len(rows), device=self.device), last])

    def _row(self, request: GenerationRequest) -> _Row:
        generator = None
        if request.params.temperature >= MIN_TEMPERATURE:
            generator = torch.Generator(device="cpu")
            seed = request.params.seed
            generator.manual_seed(seed if seed is not None else torch.seed())
        edits = RowEdits(len(request.prompt), [(resolve(self.model, e.hook), e) for e in request.interventions])
        return _Row(request, edits, generator)

    def _decode(self) -> int:
        rows = self.rows
        ids = torch.tensor([[r.next_token] for r in rows], device=self.device)
        position_ids = torch.tensor([[r.length] for r in rows], device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(rows), 1)], dim=1)
        self._hooks.set(self._decode_edits.step_fns(rows))
        with self._hooks.active():
            out = _model_inputs(self.model, input_ids=ids, attention_mask=self.mask, position_ids=position_ids,
                                cache=self.cache)
        self.cache = out.cache
        for r in rows:
            r.length += 1
        return self._advance(rows, out.logits[:, -1])

    # -- cache bookkeeping ----------------------------------------------------------------------------------------

    def _merge(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append prefilled rows to the batch cache, left-padding whichever side is shorter with masked zeros."""
        self._decode_edits.invalidate()
        if self.cache is None or not self.rows:
            self.cache, self.mask, self.rows = cache, mask, list(rows)
            return
        width = max(self.mask.shape[1], mask.shape[1])

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0)) if t.shape[-2] < width else t

        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys), pad(theirs.keys)])
            mine.values = torch.cat([pad(mine.values), pad(theirs.values)])
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (width - self.mask.shape[1], 0)),
                               torch.nn.functional.pad(mask, (width - mask.shape[1], 0))])
        self.rows.extend(rows)

    def _drop(self, leaving: list[_Row], reason: str | None) -> None:
        """Remove rows from the batch; with a ``reason`` their requests are told they finished for it."""
        if not leaving:
            return
        for row in leaving if reason else ():
            row.request.on_event(TokenEvent(None, "", finish_reason=reason))
        keep = [i for i, r in enumerate(self.rows) if r not in leaving]
        self.rows = [self.rows[i] for i in keep]
        self._decode_edits.invalidate()
        if not self.rows:
            self.cache, self.mask = None, self.mask[:0, :0]
            self._hooks.clear()
            return
        assert self.cache is not None
        index = torch.tensor(keep, device=self.device)
        mask = self.mask[index]
        # Columns no remaining row uses (a long row left) are cut, so the cache is as wide as the longest row.
        used = mask.any(0).nonzero()
        first = int(used[0]) if used.numel() else mask.shape[1]
        self.mask = mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]

    # -- sampling and output --------------------------------------------------------------------------------------

    def _advance(self, rows: Sequence[_Row], logits: torch.Tensor) -> int:
        """Choose each row's next token, emit it, and drop the rows that finished."""
        finished: list[_Row] = []
        need_logprobs = any(r.request.params.logprobs is not None for r in rows)
        logprobs = torch.log_softmax(logits.float(), dim=-1) if need_logprobs else None
        greedy = logits.argmax(-1).tolist()
        for i, row in enumerate(rows):
            params = row.request.params
            token = greedy[i] if params.temperature < MIN_TEMPERATURE else choose(logits[i], params, row.generator)
            row.generated.append(token)
            row.next_token = token
            event = self._event(row, token, None if logprobs is None else logprobs[i])
            row.request.on_event(event)
            if event.finish_reason is not None:
                finished.append(row)
        self._drop(finished, None)
        return len(rows)

    def _event(self, row: _Row, token: int, logprobs: torch.Tensor | None) -> TokenEvent:
        params = row.request.params
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        finish = None
        stop_at = min((i for i in (text.find(s) for s in params.stop) if i >= 0), default=-1)
        if stop_at >= 0:
            text, finish = text[:stop_at], "stop"
        elif not params.ignore_eos and (token == self.eos or token in params.stop_token_ids):
            finish = "stop"
        elif len(row.generated) >= params.max_new_tokens:
            finish = "length"
        if finish is None:
            text = text[: len(text) - _held_back(text, params.stop)]
        delta, row.emitted = text[row.emitted:], max(row.emitted, len(text))
        event = TokenEvent(token, delta, finish_reason=finish)
        if logprobs is not None and params.logprobs is not None:
            event.logprob = float(logprobs[token])
            if params.logprobs > 0:
                top = logprobs.topk(params.logprobs)
                event.top_logprobs = dict(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        return event


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` not to stream yet: a partial UTF-8 character or a stop string's prefix."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                longest = max(longest, k)
                break
    return longest
