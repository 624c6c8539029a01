"""Serialisable descriptions of what to load and what to record (torch-free, like the intervention models)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .interventions import HookName, Positions

DType = Literal["float32", "float16", "bfloat16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    """A causal LM in Hugging Face format: a local directory or a hub id (safetensors weights only)."""

    model: Annotated[str, Field(min_length=1, max_length=1024)]
    revision: str | None = None
    dtype: DType | Literal["auto"] = "float32"
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?|mps|auto)$")] = "cpu"
    # Executing code shipped with a checkpoint is opt-in: a hub id must not run arbitrary Python by default.
    trust_remote_code: bool = False
    attn_implementation: Literal["eager", "sdpa"] | None = None


class CaptureSpec(_Strict):
    """Activations to record: hook names, token positions and the dtype they are stored in."""

    hooks: Annotated[list[HookName], Field(min_length=1, max_length=512)]
    positions: Positions = "all"
    dtype: DType | None = None
    # Skip every layer after the last requested hook when nothing downstream (logits, gradients) is needed.
    stop_early: bool = True


class Objective(_Strict):
    """The scalar a backward pass differentiates, per batch row (rows are summed: they do not interact).

    ``logit`` / ``logprob``: of ``token`` at ``position`` ("last" = each row's last non-padding token);
    ``loss``: the row's mean next-token cross-entropy over its non-padding tokens.
    """

    kind: Literal["logit", "logprob", "loss"]
    token: Annotated[int, Field(ge=0)] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = (
        None
    )
    position: int | Literal["last"] = "last"

    @model_validator(mode="after")
    def _token_for_logits(self) -> Objective:
        if self.kind in ("logit", "logprob") and self.token is None:
            raise ValueError(f"objective {self.kind!r} needs the target token id in 'token'")
        if self.kind == "loss" and (self.token is not None or self.position != "last"):
            raise ValueError("objective 'loss' uses the row's own next tokens: leave 'token' and 'position' unset")
        return self
