"""The downstream metric: how much of the model's next-token loss an SAE keeps when it replaces its hook point.

On held-out contexts, three losses: the clean model's, the model with the SAE's reconstruction spliced in at the hook
(the instrumentation core's ``SAESplice`` with ``keep_error=False``: the reconstruction *replaces* the activation),
and the model with the hook zero-ablated. CE loss recovered is ``(L_zero - L_sae) / (L_zero - L_clean)``: 1 when the
SAE loses nothing, 0 when it is as bad as deleting the activation.

The work is shared: the clean pass runs once per batch and the zero ablation once per hook, however many SAEs read
it; and every edited pass reuses the clean pass's output of the blocks before its hook (an edit cannot change what
runs before it), so only the blocks from the hook on run again, per SAE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..instrument import UnsupportedModelError, family_for, forward, resolve
from ..sae import SparseCoder
from ..spec import Ablation, SAESplice


@dataclass(frozen=True)
class DownstreamLosses:
    clean: float
    spliced: float
    zero_ablated: float

    @property
    def ce_loss_recovered(self) -> float | None:
        """None when zero-ablating the hook does not raise the loss (the ratio means nothing then)."""
        gap = self.zero_ablated - self.clean
        if not gap > 0:
            return None
        return (self.zero_ablated - self.spliced) / gap

    def to_dict(self) -> dict[str, float | None]:
        return {"cleanLoss": self.clean, "splicedLoss": self.spliced, "zeroAblationLoss": self.zero_ablated,
                "ceLossRecovered": self.ce_loss_recovered}


class OnDevice(nn.Module):
    """An SAE on its own device, spliced into a model on another: inputs move to the SAE, reconstructions back."""

    def __init__(self, sae: SparseCoder, model_device: torch.device) -> None:
        super().__init__()
        self.sae, self.model_device = sae, model_device
        self.sae_device = sae.W_enc.device

    @property
    def d_in(self) -> int:
        return self.sae.d_in

    @property
    def dtype(self) -> torch.dtype:
        return self.sae.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x.to(self.sae_device))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(latents).to(self.model_device)


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of every next-token prediction of [batch, seq] contexts (float64 sum)."""
    predicted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return nn.functional.cross_entropy(predicted, ids[:, 1:].reshape(-1).to(predicted.device),
                                       reduction="sum").double()


def blocks_before(model: nn.Module, hook: str) -> int:
    """How many leading blocks compute the same with ``hook`` edited as without: those before the block the hook
    lives in, and that block too when the hook is its output; every block for the final norm's output. 0 for a
    model of no known family (nothing is shared)."""
    try:
        family = family_for(model.config)
    except (UnsupportedModelError, AttributeError):
        return 0
    site = resolve(model, hook)
    blocks = model.get_submodule(family.blocks)
    if site.module_path == family.final_norm:
        return len(blocks)  # type: ignore[arg-type]  # a ModuleList
    if not site.module_path.startswith(family.blocks + "."):
        return 0
    index, _, within = site.module_path[len(family.blocks) + 1:].partition(".")
    return int(index) + 1 if not within and site.kind == "output" else int(index)


@contextlib.contextmanager
def recording_outputs(blocks: nn.ModuleList, depths: set[int]) -> Iterator[dict[int, Any]]:
    """The output of the ``depth - 1``-th block for each depth, as the model's loop receives it, of passes inside."""
    outputs: dict[int, Any] = {}
    handles = [blocks[depth - 1].register_forward_hook(
        lambda _module, _args, output, depth=depth: outputs.__setitem__(depth, output)) for depth in depths if depth]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def reusing(blocks: nn.ModuleList, depth: int, output: Any) -> Iterator[None]:
    """The first ``depth`` blocks return ``output`` (the last one's, recorded) instead of running; their hooks, and
    so edits at the last one's output, still apply."""
    skipped = list(blocks)[:depth]
    # An instance-level forward (accelerate's dispatch wraps one) is put back as it was.
    own = [block.__dict__.get("forward") for block in skipped]
    for block in skipped:
        block.forward = lambda *_args, **_kwargs: output
    try:
        yield
    finally:
        for block, forward_ in zip(skipped, own, strict=True):
            if forward_ is None:
                del block.forward
            else:
                block.forward = forward_


def downstream_losses(model: nn.Module, contexts: torch.Tensor, saes: Mapping[str, tuple[str, SparseCoder]],
                      batch_size: int = 16) -> dict[str, DownstreamLosses]:
    """Mean next-token loss on ``contexts`` ([n, seq] token ids): clean, and per SAE (name → (hook, trained SAE
    in raw units, on any device)) with its reconstruction spliced in and with its hook zero-ablated."""
    device = next(model.parameters()).device
    spliceable = {name: OnDevice(sae.eval(), device) for name, (_, sae) in saes.items()}
    hooks = {name: hook for name, (hook, _) in saes.items()}
    depths = {hook: blocks_before(model, hook) for hook in hooks.values()}
    blocks = (cast(nn.ModuleList, model.get_submodule(family_for(model.config).blocks)) if any(depths.values())
              else nn.ModuleList())
    clean = 0.0
    spliced = dict.fromkeys(saes, 0.0)
    zeroed: dict[str, float] = {}
    predictions = contexts.shape[0] * (contexts.shape[1] - 1)

    def edited_loss(ids: torch.Tensor, hook: str, prefix: Mapping[int, Any], **edit: Any) -> float:
        with reusing(blocks, depths[hook], prefix.get(depths[hook])):
            return float(next_token_loss(forward(model, ids, **edit).logits, ids))

    for start in range(0, contexts.shape[0], batch_size):
        ids = contexts[start:start + batch_size].to(device=device, dtype=torch.long)
        with recording_outputs(blocks, set(depths.values())) as prefix:
            clean += float(next_token_loss(forward(model, ids).logits, ids))
        for name, hook in hooks.items():
            spliced[name] += edited_loss(ids, hook, prefix, saes=spliceable,
                                         interventions=SAESplice(hook=hook, sae=name, keep_error=False))
        for hook in set(hooks.values()):  # one ablation per hook, however many SAEs read it
            zeroed[hook] = zeroed.get(hook, 0.0) + edited_loss(ids, hook, prefix,
                                                               interventions=Ablation(hook=hook, mode="zero"))
    return {name: DownstreamLosses(clean=clean / predictions, spliced=spliced[name] / predictions,
                                   zero_ablated=zeroed[hook] / predictions) for name, hook in hooks.items()}
