"""On-the-fly data (``data.onTheFly``): the model runs inside the trainer and its activations are the stream.

The corpus is read and packed into contexts as an ActivationDump does (``iter_documents`` + ``pack_contexts``), held
as token ids (4 bytes a token; ``dataset.maxTokens`` bounds it). The first contexts are held out for the downstream
metric; the others form the training stream, its contexts in a seeded order per epoch, each context's tokens in
order. Row ``r`` of the stream is token ``r % L`` of the epoch's context ``r // L``; a step's rows are consecutive,
and each rank extracts only the contexts its slice of them touches, with one instrumented forward that stops after
the deepest hook any SAE needs. The model sits on its own device; rows move to the SAEs' device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from interp_operator.api.saetrainingjob import OnTheFlySpec

from ..corpus import iter_documents, pack_contexts, packing_for
from ..dump.config import ConfigError
from ..instrument import HookPointError, capture, resolve
from ..models import LoadedModel, load_model
from ..spec import ModelSpec
from ..store.manifest import HookInfo, HookStats
from ..store.reader import Position

if TYPE_CHECKING:
    from .config import TrainConfig

HELD_OUT_CONTEXTS = 64
"""At most this many contexts (and at most a tenth of the corpus) are kept out of training for the downstream loss."""


def read_contexts(dataset: Path, spec: OnTheFlySpec, tokenizer: object) -> torch.Tensor:
    """The corpus as [contexts, contextLength] token ids, packed exactly as an ActivationDump packs it."""
    length = spec.context_length
    max_contexts = None if spec.dataset.max_tokens is None else spec.dataset.max_tokens // length
    if max_contexts == 0:
        raise ConfigError(f"data.onTheFly.dataset.maxTokens ({spec.dataset.max_tokens}) is less than one context "
                          f"({length} tokens)")
    documents = iter_documents(dataset, spec.dataset.format, spec.dataset.text_field)
    ids = [context for context, _ in pack_contexts(documents, tokenizer, length, packing=packing_for(tokenizer),
                                                   max_contexts=max_contexts)]
    if not ids:
        raise ConfigError(f"data.onTheFly.dataset: {dataset} has fewer tokens than one context ({length})")
    return torch.from_numpy(np.stack(ids).astype(np.int64))


class StreamManifest:
    """What the members need to know of a hook (width, rms norm), as a store's manifest tells them."""

    def __init__(self, hooks: list[HookInfo]) -> None:
        self.hooks = hooks

    def hook(self, name: str) -> HookInfo:
        for hook in self.hooks:
            if hook.name == name:
                return hook
        raise ConfigError(f"the model has no hook {name!r} among those the SAEs read")


class ModelStream:
    """The activation stream of a model over a corpus, read per step and per rank like a store."""

    def __init__(self, loaded: LoadedModel, contexts: torch.Tensor, spec: OnTheFlySpec, hooks: list[str],
                 device: torch.device, seed: int) -> None:
        self.loaded, self.spec, self.hooks, self.device, self.seed = loaded, spec, hooks, device, seed
        self.root = f"data.onTheFly ({contexts.shape[0]} contexts)"
        held = min(HELD_OUT_CONTEXTS, contexts.shape[0] // 10)
        self.held_out, self.train = contexts[:held], contexts[held:]
        self.length = spec.context_length
        self.tokens = self.train.shape[0] * self.length
        """Rows of one epoch."""
        self._orders: dict[int, torch.Tensor] = {}
        self._cached: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self._first: dict[str, torch.Tensor] = {}
        self.manifest = StreamManifest([])

    def first_rows(self, count: int) -> dict[str, torch.Tensor]:
        """The stream's first ``count`` rows, kept: the norms, every b_dec and the export check read them."""
        if not self._first or next(iter(self._first.values())).shape[0] < count:
            self._first = self.rows(0, count)
        return {hook: rows[:count] for hook, rows in self._first.items()}

    def describe(self, sample_rows: int) -> StreamManifest:
        """Widths and norms of every hook from the stream's first rows (the same rows on every rank)."""
        first = self.first_rows(min(sample_rows, self.tokens))
        infos = []
        for hook in self.hooks:
            x = first[hook].double()
            norms = x.norm(dim=1)
            infos.append(HookInfo(name=hook, d=x.shape[1], shape=[x.shape[1]], dtype="float32", gradients=False,
                                  stats=HookStats(count=x.shape[0], mean_norm=float(norms.mean()),
                                                  rms_norm=math.sqrt(float(norms.pow(2).mean())),
                                                  max_norm=float(norms.max()))))
        self.manifest = StreamManifest(infos)
        return self.manifest

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(self.train.shape[0],
                                                  generator=torch.Generator().manual_seed(self.seed + epoch))}
        return self._orders[epoch]

    def _extract(self, epoch: int, first: int) -> None:
        """Activations of ``batchSize`` contexts of the epoch's order from ``first`` on, kept until the next call."""
        order = self._order(epoch)[first:first + self.spec.batch_size]
        model = self.loaded.model
        ids = self.train[order].to(model.device)
        got = capture(model, ids, self.hooks, stop_early=True)
        self._cached = {(epoch, first + i): {h: got[h][i].reshape(self.length, -1) for h in self.hooks}
                        for i in range(order.shape[0])}

    def rows(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """Stream rows [start, start + count) (``start`` counted over all epochs), float32 on the SAEs' device."""
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        row, end = start, start + count
        while row < end:
            epoch, offset = divmod(row, self.tokens)
            context, position = divmod(offset, self.length)
            if (epoch, context) not in self._cached:
                self._extract(epoch, context)
            take = min(end - row, self.length - position)
            for hook in self.hooks:
                parts[hook].append(self._cached[(epoch, context)][hook][position:position + take])
            row += take
        return {h: torch.cat(v).to(device=self.device, dtype=torch.float32) for h, v in parts.items()}

    def batches(self, step: int, batch: int, rank: int, world_size: int
                ) -> Iterator[tuple[Position, dict[str, torch.Tensor]]]:
        """From ``step`` on: this rank's slice of each step's ``batch`` rows, and the position after the step."""
        share = batch // world_size
        while True:
            yield self.position(step + 1, batch), self.rows(step * batch + rank * share, share)
            step += 1

    def position(self, step: int, batch: int) -> Position:
        epoch, offset = divmod(step * batch, self.tokens)
        return Position(epoch=epoch, offset=offset)


def open_stream(config: TrainConfig, hooks: dict[str, str], device: torch.device, model_device: torch.device
                ) -> ModelStream:
    """Load the model on ``model_device``, read the corpus, and check every hook (``hooks``: the spec field that
    names each, e.g. ``saes[l3].hookPoint``) before any work."""
    spec = config.spec
    assert config.model is not None and config.dataset is not None and spec.data.on_the_fly is not None
    model = spec.model
    loaded = load_model(ModelSpec(model=config.model, revision=model.revision, dtype=model.dtype,
                                  device=str(model_device), trust_remote_code=model.trust_remote_code))
    for hook, field_name in hooks.items():
        try:
            resolve(loaded.model, hook)
        except HookPointError as err:
            raise ConfigError(f"{field_name}: {err}") from None
    contexts = read_contexts(config.dataset, spec.data.on_the_fly, loaded.tokenizer)
    return ModelStream(loaded, contexts, spec.data.on_the_fly, list(hooks), device, spec.training.seed)
