"""The shape and recipe of one sparse coder (SAE or transcoder); plain data, checked on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Architecture = Literal["topk", "batchtopk", "jumprelu", "relu"]
ARCHITECTURES: tuple[str, ...] = ("topk", "batchtopk", "jumprelu", "relu")
TOPK_FAMILY: tuple[str, ...] = ("topk", "batchtopk")


@dataclass(frozen=True)
class CoderConfig:
    """Widths, architecture and loss recipe. Bad values raise ``ValueError`` naming the field."""

    architecture: Architecture
    d_in: int
    d_sae: int
    d_out: int | None = None
    """Width of the reconstruction target; set it for a transcoder (even when equal to ``d_in``), None for an SAE."""
    k: int | None = None
    """Latents per token (TopK) or on average per token (BatchTopK)."""
    sparsity_coefficient: float | None = None
    """Weight of the L0 (JumpReLU) or decoder-norm-weighted L1 (ReLU) penalty; None picks the default below."""
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001
    aux_k: int | None = None
    """Dead latents the AuxK loss reconstructs the residual with; None means d_in // 2 (capped at d_sae)."""
    aux_k_coefficient: float = 1 / 32
    dead_tokens_threshold: int = 10_000_000
    """Tokens without firing after which the trainer calls a latent dead (it passes ``dead_mask``)."""
    decoder: Literal["sparse", "dense"] = "sparse"
    """TopK family: gather decoder with sparse backward, or the dense reference path (same numbers, slower)."""
    dead_preact_coefficient: float = 1e-5
    """ReLU / JumpReLU: weight of the loss that pulls dead latents' pre-activations up to their threshold."""
    batchtopk_threshold_momentum: float = 0.99
    """BatchTopK: EMA momentum of the inference threshold estimated in training forwards."""

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"CoderConfig.{field}: {why}, got {getattr(self, field)!r}")

        if self.architecture not in ARCHITECTURES:
            raise bad("architecture", f"must be one of {', '.join(ARCHITECTURES)}")
        for field in ("d_in", "d_sae"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise bad(field, "must be a positive integer")
        if self.d_out is not None and (not isinstance(self.d_out, int) or self.d_out < 1):
            raise bad("d_out", "must be a positive integer or None")
        if self.architecture in TOPK_FAMILY:
            if self.k is None or not 1 <= self.k <= self.d_sae:
                raise bad("k", f"architecture {self.architecture!r} needs 1 <= k <= d_sae ({self.d_sae})")
        elif self.k is not None:
            raise bad("k", f"k is only used by topk and batchtopk, not {self.architecture!r}")
        if self.sparsity_coefficient is not None:
            if self.architecture in TOPK_FAMILY:
                raise bad("sparsity_coefficient", f"{self.architecture!r} has no sparsity penalty (k sets the L0)")
            if not self.sparsity_coefficient >= 0:
                raise bad("sparsity_coefficient", "must be >= 0")
        for field in ("jumprelu_bandwidth", "jumprelu_init_threshold"):
            if not getattr(self, field) > 0:
                raise bad(field, "must be > 0")
        if self.aux_k is not None and not 1 <= self.aux_k <= self.d_sae:
            raise bad("aux_k", f"must be in 1..d_sae ({self.d_sae}) or None")
        for field in ("aux_k_coefficient", "dead_preact_coefficient"):
            if not getattr(self, field) >= 0:
                raise bad(field, "must be >= 0")
        if not self.dead_tokens_threshold >= 1:
            raise bad("dead_tokens_threshold", "must be >= 1")
        if self.decoder not in ("sparse", "dense"):
            raise bad("decoder", "must be 'sparse' or 'dense'")
        if not 0 <= self.batchtopk_threshold_momentum < 1:
            raise bad("batchtopk_threshold_momentum", "must be in [0, 1)")

    @property
    def out_width(self) -> int:
        return self.d_in if self.d_out is None else self.d_out

    @property
    def is_transcoder(self) -> bool:
        return self.d_out is not None

    @property
    def penalty(self) -> float:
        """The sparsity coefficient in force (defaults tuned for inputs scaled to E‖x‖² = d)."""
        if self.sparsity_coefficient is not None:
            return self.sparsity_coefficient
        return {"jumprelu": 1.0, "relu": 1.0}.get(self.architecture, 0.0)

    @property
    def aux_k_in_force(self) -> int:
        return self.aux_k if self.aux_k is not None else min(self.d_sae, max(1, self.d_in // 2))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoderConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"CoderConfig: unknown field(s) {', '.join(unknown)}")
        return cls(**data)
