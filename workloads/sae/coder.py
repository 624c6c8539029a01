"""``SparseCoder``: one ``nn.Module`` for TopK, BatchTopK, JumpReLU and ReLU SAEs and transcoders.

Shapes follow SAELens: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``, ``b_dec [d_out]``,
and ``threshold [d_sae]`` for JumpReLU. An SAE centres its input with ``b_dec`` (``(x - b_dec) @ W_enc``); a
transcoder (``d_out`` set) does not, its ``b_dec`` being the bias of the other hook point it predicts.

Losses (``CoderOutput.losses``): ``mse`` is the squared error summed over the output dimensions and averaged over
tokens (so with inputs scaled to E‖x‖² = d it is about d times the per-element MSE); ``fvu`` divides it by the
target's variance.

- TopK / BatchTopK minimise ``fvu + aux_k_coefficient * auxk``; no sparsity penalty (k fixes the L0).
- JumpReLU minimises ``mse + sparsity_coefficient * l0`` with the straight-through estimator of Rajamanoharan et
  al. (2024): a rectangle kernel of width ``jumprelu_bandwidth`` gives the threshold its gradient.
- ReLU minimises ``mse + sparsity_coefficient * l1`` with the L1 weighted by each latent's decoder norm, so the
  decoder is left unconstrained (the penalty cannot be dodged by shrinking latents and growing rows).

Dead latents (``dead_mask`` from the trainer, latents that have not fired for ``dead_tokens_threshold`` tokens):
AuxK for the TopK family (the top ``aux_k`` dead latents reconstruct the main residual, loss normalised by the
residual's variance and scaled by ``min(1, dead / aux_k)``); for JumpReLU and ReLU a pre-activation loss
``dead_preact_coefficient * Σ_dead relu(threshold - pre) * ‖W_dec row‖`` that pulls dead latents back towards firing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import TOPK_FAMILY, CoderConfig
from .sparse import Pattern, SelectedPreacts, SparseDecode

_EPS = 1e-12


@dataclass
class CoderOutput:
    """One forward: what the trainer backprops (``loss``), logs (``losses``, ``fvu``, ``l0``) and tracks (``fired``)."""

    reconstruction: torch.Tensor
    """[n, d_out]"""
    latent_indices: torch.Tensor | None
    """[n, k] for TopK; None when ``latent_acts`` is dense."""
    latent_acts: torch.Tensor
    """[n, k] (values at ``latent_indices``) or [n, d_sae] dense."""
    loss: torch.Tensor
    fvu: torch.Tensor
    l0: torch.Tensor
    fired: torch.Tensor
    """bool [d_sae]: latents with a nonzero activation in this batch."""
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


class _JumpReLU(torch.autograd.Function):
    """``pre * H(pre - θ)``; gradient to ``pre`` through the kept units, to θ by the rectangle-kernel estimator."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        kernel = ((pre - threshold).abs() < ctx.bandwidth / 2).to(grad.dtype) / ctx.bandwidth
        grad_threshold = -(threshold * kernel * grad).sum(0)
        return (pre > threshold) * grad, grad_threshold, None


class _Step(torch.autograd.Function):
    """``H(pre - θ)`` (for the L0 penalty); gradient to θ only, by the same estimator."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        kernel = ((pre - threshold).abs() < ctx.bandwidth / 2).to(grad.dtype) / ctx.bandwidth
        return None, -(kernel * grad).sum(0), None


def geometric_median(points: torch.Tensor, iterations: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed Euclidean distance to ``points`` [n, d]."""
    points = points.to(torch.float64)
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(1e-8)
        updated = (weights[:, None] * points).sum(0) / weights.sum()
        shift = float((updated - median).norm())
        median = updated
        if shift <= tol * max(1.0, float(median.norm())):
            break
    return median


class DecoderConstraint:
    """Unit-norm decoder rows (TopK family, JumpReLU; ReLU's decoder is unconstrained, its L1 weighted by the row
    norms) and non-negative JumpReLU thresholds, row by row, so a latent-sharded coder applies it to its own rows."""

    cfg: CoderConfig
    W_dec: nn.Parameter
    threshold: nn.Parameter

    @property
    def _unit_norm_decoder(self) -> bool:
        return self.cfg.architecture != "relu"

    @torch.no_grad()
    def before_step_(self) -> None:
        """Drop the part of each decoder row's gradient parallel to the row, so that the step moves rows along the
        unit sphere and ``after_step_``'s renormalisation only removes second-order drift (TopK family, JumpReLU;
        ReLU's decoder is unconstrained)."""
        grad = self.W_dec.grad
        if grad is None or not self._unit_norm_decoder:
            return
        rows = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(_EPS)
        grad -= (grad * rows).sum(1, keepdim=True) * rows

    @torch.no_grad()
    def after_step_(self) -> None:
        """Renormalise decoder rows to unit norm; keep JumpReLU thresholds non-negative."""
        if self._unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(_EPS)
        if self.cfg.architecture == "jumprelu":
            self.threshold.clamp_(min=0.0)


class SparseCoder(DecoderConstraint, nn.Module):
    """A sparse autoencoder (``d_out`` None) or transcoder; parameters in ``dtype`` (fp32 for training)."""

    def __init__(self, cfg: CoderConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d, f, d_out = cfg.d_in, cfg.d_sae, cfg.out_width
        factory = {"device": device, "dtype": dtype}
        self.W_enc = nn.Parameter(torch.empty(d, f, **factory))
        self.b_enc = nn.Parameter(torch.zeros(f, **factory))
        self.W_dec = nn.Parameter(torch.empty(f, d_out, **factory))
        self.b_dec = nn.Parameter(torch.zeros(d_out, **factory))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.full((f,), cfg.jumprelu_init_threshold, **factory))
        if cfg.architecture == "batchtopk":
            # Inference threshold: EMA of the smallest activation a training batch kept; -1 until the first one.
            self.register_buffer("batch_threshold", torch.full((), -1.0, **factory))
        self.reset_parameters(generator)

    # -- the splice protocol ------------------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def d_out(self) -> int:
        return self.cfg.out_width

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents [n, d_sae] with inference semantics (BatchTopK uses its estimated threshold)."""
        pre = self.preacts(x)
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold)
        if arch == "batchtopk" and float(self.batch_threshold) >= 0:
            return torch.relu(pre) * (pre > self.batch_threshold)
        # TopK, and a BatchTopK that never saw a training batch (no threshold yet): per-token top k.
        assert self.cfg.k is not None
        top = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[n, d_sae] -> [n, d_out]."""
        return latents @ self.W_dec + self.b_dec

    # -- building blocks (also for trainers that shard latents) --------------------------------------------------
    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        return x if self.cfg.is_transcoder else x - self.b_dec

    def preacts(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, self.encoder_input(x), self.W_enc)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows; encoder = decoder transpose (SAE) or its own unit-norm columns
        (transcoder, whose input and output spaces differ); zero biases."""
        cfg = self.cfg
        with torch.no_grad():
            device = self.W_dec.device
            w_dec = torch.randn(cfg.d_sae, cfg.out_width, generator=generator, device=device, dtype=torch.float32)
            w_dec /= w_dec.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w_dec)
            if cfg.is_transcoder:
                w_enc = torch.randn(cfg.d_in, cfg.d_sae, generator=generator, device=device, dtype=torch.float32)
                self.W_enc.copy_(w_enc / w_enc.norm(dim=0, keepdim=True))
            else:
                self.W_enc.copy_(w_dec.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    @torch.no_grad()
    def init_b_dec_(self, sample: torch.Tensor, method: str = "geometric_median") -> None:
        """Set ``b_dec`` from a sample of the reconstruction target ([n, d_out]): its geometric median (robust to
        the few huge-norm tokens activations have) or its ``"mean"``."""
        if sample.ndim != 2 or sample.shape[1] != self.cfg.out_width:
            raise ValueError(f"init_b_dec_: sample must be [n, {self.cfg.out_width}], got {list(sample.shape)}")
        if method == "geometric_median":
            centre = geometric_median(sample)
        elif method == "mean":
            centre = sample.to(torch.float64).mean(0)
        else:
            raise ValueError(f"init_b_dec_: method must be 'geometric_median' or 'mean', got {method!r}")
        self.b_dec.copy_(centre.to(self.b_dec))

    # -- training forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None,
                dead_mask: torch.Tensor | None = None, variance: float | None = None) -> CoderOutput:
        """``variance`` overrides the target variance that ``fvu`` divides by (default: this batch's). A
        data-parallel trainer passes the whole gang batch's divided by the world size, so that the ranks' average
        gradient is the one-process gradient of the whole batch's FVU."""
        if x.ndim != 2 or x.shape[1] != self.cfg.d_in:
            raise ValueError(f"SparseCoder: x must be [n, d_in={self.cfg.d_in}], got {list(x.shape)}")
        if target is None:
            if self.cfg.is_transcoder:
                raise ValueError("SparseCoder: a transcoder (d_out set) needs the target activations")
            target = x
        elif not self.cfg.is_transcoder:
            raise ValueError("SparseCoder: a target was given but d_out is None; set CoderConfig.d_out for a "
                             "transcoder")
        if target.shape != (x.shape[0], self.cfg.out_width):
            raise ValueError(f"SparseCoder: target must be [{x.shape[0]}, {self.cfg.out_width}], "
                             f"got {list(target.shape)}")
        if dead_mask is not None and dead_mask.shape != (self.cfg.d_sae,):
            raise ValueError(f"SparseCoder: dead_mask must be [{self.cfg.d_sae}], got {list(dead_mask.shape)}")
        target = target.to(self.dtype)
        arch = self.cfg.architecture
        if arch == "topk" or (arch == "batchtopk" and self.training):
            return self._forward_topk_family(x, target, dead_mask, variance)
        return self._forward_dense(x, target, dead_mask, variance)

    def _select(self, pre: torch.Tensor) -> tuple[Pattern, torch.Tensor | None]:
        """The active (token, latent) pairs of a TopK-family forward; ``[n, k]`` indices for TopK."""
        n, f = pre.shape
        k = self.cfg.k
        assert k is not None
        if self.cfg.architecture == "topk":
            indices = pre.topk(k, dim=-1, sorted=False).indices.sort(dim=1).values
            return Pattern.from_topk(indices, f), indices
        # BatchTopK: the n*k largest positive pre-activations of the whole batch.
        flat = pre.reshape(-1)
        top = flat.topk(min(n * k, flat.numel()), sorted=False)
        chosen = top.indices[top.values > 0].sort().values
        return Pattern.from_rows_cols(chosen // f, chosen % f, n, f), None

    def _selected_acts(self, x: torch.Tensor, pre: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        """ReLU'd pre-activations at the pattern's pairs [nnz], differentiable in the encoder parameters."""
        if self.cfg.decoder == "dense":  # reference: plain autograd through the dense pre-activations
            return torch.relu(pre[pattern.rows(), pattern.cols])
        b_dec = None if self.cfg.is_transcoder else self.b_dec
        return torch.relu(SelectedPreacts.apply(x.to(self.dtype), self.W_enc, self.b_enc, b_dec, pre, pattern))

    def _decode_pairs(self, values: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        """Σ values * W_dec rows over the pattern [n, d_out] (no bias)."""
        if self.cfg.decoder == "dense":  # reference: materialise [n, d_sae] and multiply
            return pattern.dense(values) @ self.W_dec
        return SparseDecode.apply(values, self.W_dec, pattern)

    def _forward_topk_family(self, x: torch.Tensor, target: torch.Tensor,
                             dead_mask: torch.Tensor | None, variance: float | None) -> CoderOutput:
        n = x.shape[0]
        if self.cfg.decoder == "dense":
            pre = self.preacts(x)
        else:
            with torch.no_grad():  # gradients come from SelectedPreacts' sparse backward
                pre = self.preacts(x)
        with torch.no_grad():
            pattern, indices = self._select(pre.detach())
        values = self._selected_acts(x, pre, pattern)
        reconstruction = self._decode_pairs(values, pattern) + self.b_dec
        if self.cfg.architecture == "batchtopk":
            self._update_batch_threshold(values.detach())
        losses = self._reconstruction_losses(reconstruction, target, variance)
        loss = losses["fvu"]
        if dead_mask is not None and self.cfg.aux_k_coefficient > 0 and bool(dead_mask.any()):
            losses["auxk"] = self._auxk(x, pre, target - reconstruction.detach(), dead_mask)
            loss = loss + self.cfg.aux_k_coefficient * losses["auxk"]
        fired = torch.zeros(self.cfg.d_sae, dtype=torch.bool, device=x.device)
        fired[pattern.cols[values.detach() > 0]] = True
        active = (values.detach() > 0).sum()
        l0 = active.to(torch.float32) / n
        losses["l0"] = l0
        acts = values.reshape(n, -1) if indices is not None else pattern.dense(values)
        return CoderOutput(reconstruction=reconstruction, latent_indices=indices, latent_acts=acts, loss=loss,
                           fvu=losses["fvu"].detach(), l0=l0, fired=fired, losses=losses)

    def _auxk(self, x: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor,
              dead_mask: torch.Tensor) -> torch.Tensor:
        """The dead latents' best ``aux_k`` reconstruct the main residual; normalised by its variance."""
        dead = int(dead_mask.sum())
        k_aux = min(self.cfg.aux_k_in_force, dead)
        with torch.no_grad():
            masked = pre.detach().masked_fill(~dead_mask.to(torch.bool), -math.inf)
            indices = masked.topk(k_aux, dim=-1, sorted=False).indices.sort(dim=1).values
            pattern = Pattern.from_topk(indices, self.cfg.d_sae)
        values = self._selected_acts(x, pre, pattern)
        residual_hat = self._decode_pairs(values, pattern)
        variance = (residual - residual.mean(0)).pow(2).sum().clamp_min(_EPS)
        scale = min(1.0, dead / k_aux)
        return scale * (residual_hat - residual).pow(2).sum() / variance

    @torch.no_grad()
    def _update_batch_threshold(self, values: torch.Tensor) -> None:
        kept = values[values > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min().to(self.batch_threshold)
        if float(self.batch_threshold) < 0:
            self.batch_threshold.copy_(smallest)
        else:
            m = self.cfg.batchtopk_threshold_momentum
            self.batch_threshold.mul_(m).add_((1 - m) * smallest)

    def _forward_dense(self, x: torch.Tensor, target: torch.Tensor, dead_mask: torch.Tensor | None,
                       variance: float | None) -> CoderOutput:
        """JumpReLU and ReLU training, and inference-mode forwards of the TopK family (dense latents)."""
        cfg = self.cfg
        pre = self.preacts(x)
        losses: dict[str, torch.Tensor] = {}
        if cfg.architecture == "jumprelu":
            latents = _JumpReLU.apply(torch.relu(pre), self.threshold, cfg.jumprelu_bandwidth)
            penalty = _Step.apply(pre, self.threshold, cfg.jumprelu_bandwidth).sum(1).mean()
            losses["l0_penalty"] = penalty
        elif cfg.architecture == "relu":
            latents = torch.relu(pre)
            penalty = (latents * self.W_dec.norm(dim=1)).sum(1).mean()
            losses["l1"] = penalty
        else:
            latents = self.encode(x)
            penalty = torch.zeros((), device=x.device, dtype=self.dtype)
        reconstruction = latents @ self.W_dec + self.b_dec
        losses.update(self._reconstruction_losses(reconstruction, target, variance))
        if cfg.architecture in TOPK_FAMILY:
            loss = losses["fvu"]
        else:
            loss = losses["mse"] + cfg.penalty * penalty
            if dead_mask is not None and cfg.dead_preact_coefficient > 0 and bool(dead_mask.any()):
                losses["dead_preact"] = self._dead_preact(pre, dead_mask)
                loss = loss + cfg.dead_preact_coefficient * losses["dead_preact"]
        active = latents.detach() != 0
        l0 = active.sum(1).to(torch.float32).mean()
        losses["l0"] = l0
        return CoderOutput(reconstruction=reconstruction, latent_indices=None, latent_acts=latents, loss=loss,
                           fvu=losses["fvu"].detach(), l0=l0, fired=active.any(0), losses=losses)

    def _dead_preact(self, pre: torch.Tensor, dead_mask: torch.Tensor) -> torch.Tensor:
        dead = dead_mask.to(torch.bool)
        threshold = self.threshold.detach()[dead] if self.cfg.architecture == "jumprelu" else 0.0
        gap = torch.relu(threshold - pre[:, dead])
        return (gap * self.W_dec.detach()[dead].norm(dim=1)).sum(1).mean()

    @staticmethod
    def _reconstruction_losses(reconstruction: torch.Tensor, target: torch.Tensor,
                               variance: float | None) -> dict[str, torch.Tensor]:
        error = (reconstruction - target).pow(2).sum()
        normaliser = ((target - target.mean(0)).pow(2).sum().clamp_min(_EPS) if variance is None
                      else max(variance, _EPS))
        n = target.shape[0]
        return {"mse": error / n, "fvu": error / normaliser}
