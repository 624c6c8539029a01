"""The on-disk description of a sparse autoencoder (``sae_config.json`` next to ``sae.safetensors``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .run import DType

SAE_FORMAT: Literal["interp-sae"] = "interp-sae"
SAE_FORMAT_VERSION: Literal[1] = 1


class SAEConfig(BaseModel):
    """Shapes and activation of an SAE; weights live in safetensors (W_enc, b_enc, W_dec, b_dec, [threshold])."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    format: Literal["interp-sae"] = SAE_FORMAT
    version: Literal[1] = SAE_FORMAT_VERSION
    d_in: Annotated[int, Field(ge=1)]
    d_sae: Annotated[int, Field(ge=1)]
    activation: Literal["relu", "jumprelu", "topk"] = "relu"
    k: Annotated[int, Field(ge=1)] | None = None
    dtype: DType = "float32"
    # Provenance: the model and hook the SAE was trained on (informational; the splice checks widths only).
    model: str | None = None
    hook: str | None = None

    @model_validator(mode="after")
    def _k_for_topk(self) -> SAEConfig:
        if self.activation == "topk":
            if self.k is None or self.k > self.d_sae:
                raise ValueError(f"activation 'topk' needs 1 <= k <= d_sae ({self.d_sae}), got k={self.k}")
        elif self.k is not None:
            raise ValueError("k is only used with activation 'topk'")
        return self
