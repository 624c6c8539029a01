"""The downstream metric: how much of the model's next-token loss an SAE keeps when it replaces its hook point.

On held-out contexts, three losses: the clean model's, the model with the SAE's reconstruction spliced in at the hook
(the instrumentation core's ``SAESplice`` with ``keep_error=False``: the reconstruction *replaces* the activation),
and the model with the hook zero-ablated. CE loss recovered is ``(L_zero - L_sae) / (L_zero - L_clean)``: 1 when the
SAE loses nothing, 0 when it is as bad as deleting the activation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..instrument import forward
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


def downstream_losses(model: nn.Module, contexts: torch.Tensor, saes: Mapping[str, tuple[str, SparseCoder]],
                      batch_size: int = 16) -> dict[str, DownstreamLosses]:
    """Mean next-token loss on ``contexts`` ([n, seq] token ids): clean, and per SAE (name → (hook, trained SAE
    in raw units, on any device)) with its reconstruction spliced in and with its hook zero-ablated."""
    device = next(model.parameters()).device
    spliceable = {name: OnDevice(sae.eval(), device) for name, (_, sae) in saes.items()}
    hooks = {name: hook for name, (hook, _) in saes.items()}
    clean = 0.0
    spliced = dict.fromkeys(saes, 0.0)
    zeroed: dict[str, float] = {}
    predictions = contexts.shape[0] * (contexts.shape[1] - 1)
    for start in range(0, contexts.shape[0], batch_size):
        ids = contexts[start:start + batch_size].to(device=device, dtype=torch.long)
        clean += float(next_token_loss(forward(model, ids).logits, ids))
        for name, hook in hooks.items():
            edit = SAESplice(hook=hook, sae=name, keep_error=False)
            spliced[name] += float(next_token_loss(forward(model, ids, interventions=edit,
                                                           saes=spliceable).logits, ids))
        for hook in set(hooks.values()):  # one ablation per hook, however many SAEs read it
            logits = forward(model, ids, interventions=Ablation(hook=hook, mode="zero")).logits
            zeroed[hook] = zeroed.get(hook, 0.0) + float(next_token_loss(logits, ids))
    return {name: DownstreamLosses(clean=clean / predictions, spliced=spliced[name] / predictions,
                                   zero_ablated=zeroed[hook] / predictions) for name, hook in hooks.items()}
