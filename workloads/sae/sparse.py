"""Sparse encoder gradient and gather decoder for the TopK family, each a ``torch.autograd.Function``.

A TopK step touches only ``nnz = n * k`` (token, latent) pairs of the ``[n, d_sae]`` activation matrix. The dense
path spends three ``n x d_sae x d`` products on it: the encoder forward, the encoder weight gradient, and the
decoder (forward and two gradients). Here only the encoder forward stays dense (every pre-activation is needed to
pick the top k); everything else costs ``nnz x d``:

- decode: ``F.embedding_bag`` sums the selected decoder rows weighted by the activations;
- decoder gradients: ``grad W_dec = Aᵀ @ grad_out`` (a CSR product) and ``grad values[t, j] =
  <grad_out[t], W_dec[latent_j]>`` (a sampled product, ``torch.sparse.sampled_addmm``);
- encoder gradients: ``grad W_enc = x_cᵀ @ G`` with ``G`` the sparse gradient of the selected pre-activations (a
  CSR product), ``grad b_enc`` a bincount, ``grad b_dec = -W_enc @ grad b_enc``.

The selection is described once per forward by a :class:`Pattern` (row-major CSR, plus its transpose) shared by the
encoder and decoder functions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def _csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # CSR is "beta" in torch; the products used here are long-supported ones
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


@dataclass(frozen=True)
class Pattern:
    """Which (row, latent) pairs are active: ``cols`` in row-major order, ``crow`` its row offsets [n + 1];
    ``order``/``t_crow``/``t_rows`` describe the transpose (latent-major) for the weight gradients."""

    n: int
    d_sae: int
    crow: torch.Tensor
    cols: torch.Tensor
    order: torch.Tensor
    t_crow: torch.Tensor
    t_rows: torch.Tensor

    @classmethod
    def from_topk(cls, indices: torch.Tensor, d_sae: int) -> Pattern:
        """From ``[n, k]`` latent indices (any order within a row)."""
        n, k = indices.shape
        crow = torch.arange(0, n * k + 1, k, device=indices.device)
        return cls._build(crow, indices.reshape(-1), n, d_sae)

    @classmethod
    def from_rows_cols(cls, rows: torch.Tensor, cols: torch.Tensor, n: int, d_sae: int) -> Pattern:
        """From coordinate lists sorted by row (as ``nonzero`` returns them)."""
        counts = torch.bincount(rows, minlength=n)
        crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
        crow[1:] = counts.cumsum(0)
        return cls._build(crow, cols, n, d_sae)

    @classmethod
    def _build(cls, crow: torch.Tensor, cols: torch.Tensor, n: int, d_sae: int) -> Pattern:
        cols = cols.to(torch.int64)
        rows = torch.repeat_interleave(torch.arange(n, device=cols.device), crow.diff())
        order = torch.argsort(cols, stable=True)
        t_crow = torch.zeros(d_sae + 1, dtype=torch.int64, device=cols.device)
        t_crow[1:] = torch.bincount(cols, minlength=d_sae).cumsum(0)
        return cls(n=n, d_sae=d_sae, crow=crow, cols=cols, order=order, t_crow=t_crow, t_rows=rows[order])

    def rows(self) -> torch.Tensor:
        """The row (token) of each pair [nnz]."""
        return torch.repeat_interleave(torch.arange(self.n, device=self.cols.device), self.crow.diff())

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """``[n, d_sae]`` with ``values`` at the pairs and zeros elsewhere (differentiable in ``values``)."""
        out = values.new_zeros(self.n, self.d_sae)
        return out.index_put((self.rows(), self.cols), values)

    def rows_matrix(self, values: torch.Tensor) -> torch.Tensor:
        """``[n, d_sae]`` CSR with ``values`` (row-major order)."""
        return _csr(self.crow, self.cols, values, (self.n, self.d_sae))

    def latents_matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The transpose, ``[d_sae, n]`` CSR, from the same row-major ``values``."""
        return _csr(self.t_crow, self.t_rows, values[self.order], (self.d_sae, self.n))


class SelectedPreacts(torch.autograd.Function):
    """The pre-activations ``(x - b_dec) @ W_enc + b_enc`` at the pattern's pairs, with a sparse backward.

    ``pre`` (the full pre-activation matrix, computed without autograd) is passed in so that the product is not
    recomputed; ``b_dec`` may be None (transcoders do not centre their input)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                b_dec: torch.Tensor | None, pre: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        rows = pattern.rows()
        ctx.pattern = pattern
        ctx.centred = b_dec is not None
        ctx.save_for_backward(x, W_enc, b_dec if b_dec is not None else x.new_empty(0))
        return pre[rows, pattern.cols]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, W_enc, b_dec = ctx.saved_tensors
        pattern: Pattern = ctx.pattern
        grad = grad.contiguous().to(W_enc.dtype)
        need_x, need_w, need_be, need_bd = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_be = grad_bd = None
        if need_w:
            xc = (x - b_dec if ctx.centred else x).to(W_enc.dtype)
            grad_w = (pattern.latents_matrix(grad) @ xc).T
        if need_be or need_bd:
            grad_be = torch.zeros(pattern.d_sae, dtype=W_enc.dtype, device=W_enc.device)
            grad_be.index_add_(0, pattern.cols, grad)
            if need_bd and ctx.centred:
                grad_bd = -(W_enc @ grad_be)
        if need_x:
            grad_x = (pattern.rows_matrix(grad) @ W_enc.T).to(x.dtype)
        return grad_x, grad_w, grad_be if need_be else None, grad_bd, None, None


class SparseDecode(torch.autograd.Function):
    """``out[t] = sum_j values[t, j] * W_dec[latent_j]`` over the pattern's pairs, without a dense product."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, W_dec: torch.Tensor, pattern: Pattern) -> torch.Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(values, W_dec)
        weights = values.to(W_dec.dtype)
        return F.embedding_bag(pattern.cols, W_dec, pattern.crow, mode="sum", per_sample_weights=weights,
                               include_last_offset=True)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        values, W_dec = ctx.saved_tensors
        pattern: Pattern = ctx.pattern
        grad_out = grad_out.contiguous().to(W_dec.dtype)
        grad_values = grad_w = None
        if ctx.needs_input_grad[0]:
            sampled = pattern.rows_matrix(torch.zeros_like(values, dtype=W_dec.dtype))
            grad_values = torch.sparse.sampled_addmm(sampled, grad_out, W_dec.T, beta=0.0).values()
            grad_values = grad_values.to(values.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = pattern.latents_matrix(values.to(W_dec.dtype)) @ grad_out
        return grad_values, grad_w, None
