"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..spec import MAX_WIDTH, Ablation, AddVector, HookName, Objective, Positions, Projection, Replace
from ..spec import SAESplice as _SAESplice
from ..spec.interventions import CappedFloat

MAX_PROMPTS = 64
MAX_TEXT = 1 << 20
MAX_STOPS = 16


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NamedVector(_Body):
    """A registered steering vector by name or content id: ``scale * vector`` added at ``hook``."""

    kind: Literal["vector"] = "vector"
    name: Annotated[str, Field(min_length=1, max_length=256)]
    """A named vector from the service spec, or the id an upload returned."""
    hook: HookName | None = None
    """Defaults to the vector's own hook point."""
    positions: Positions = "all"
    scale: CappedFloat = 1.0


RequestIntervention = Annotated[
    AddVector | Projection | Ablation | Replace | _SAESplice | NamedVector, Field(discriminator="kind")
]
Interventions = Annotated[list[RequestIntervention], Field(max_length=256)]
Prompt = Annotated[str, Field(max_length=MAX_TEXT)]
Prompts = Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=MAX_PROMPTS)]
Stops = Annotated[str, Field(min_length=1, max_length=256)] | Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=MAX_STOPS)
] | None


class Sampling(_Body):
    max_new_tokens: Annotated[int, Field(ge=0)] | None = None
    """Default: 16, or the server's limit when that is lower."""
    temperature: Annotated[float, Field(ge=0, le=100)] = 1.0
    """0: greedy decoding."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0, le=1 << 20)] = 0
    seed: Annotated[int, Field(ge=0, lt=1 << 63)] | None = None
    stop: Stops = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    """The chosen token's logprob plus this many most likely alternatives per step."""
    ignore_eos: bool = False


class GenerateRequest(Sampling):
    prompt: Prompts
    interventions: Interventions = []
    """Applied to every prompt of this request, at the prompt and at every generated token."""


class TokenLogprob(BaseModel):
    token: int
    text: str
    logprob: float
    top: dict[str, float] | None = None
    """Alternatives: token id (as a string) to logprob."""


class Generation(BaseModel):
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None


class GenerateResponse(BaseModel):
    generations: list[Generation]


class SAEFeatures(_Body):
    sae: Annotated[str, Field(min_length=1, max_length=256)]
    k: Annotated[int, Field(ge=1, le=256)] = 8


class ForwardRequest(_Body):
    prompt: Prompts
    hooks: Annotated[list[HookName], Field(max_length=256)] = []
    format: Literal["summary", "safetensors"] = "summary"
    """summary: per-token norms, means and max |x| as JSON; safetensors: the full tensors (and logits) as bytes."""
    interventions: Interventions = []
    top_features: Annotated[list[SAEFeatures], Field(max_length=16)] = []
    """Top SAE features per token, read at each SAE's own hook (after the interventions)."""


class TokenSummary(BaseModel):
    norm: list[float]
    mean: list[float]
    max_abs: list[float]


class Feature(BaseModel):
    feature: int
    value: float


class ForwardRow(BaseModel):
    tokens: list[int]
    summaries: dict[str, TokenSummary]
    top_features: dict[str, list[list[Feature]]]
    next_token_logprobs: dict[str, float]
    """Top-5 next-token logprobs after the last token (token id as a string)."""


class ForwardResponse(BaseModel):
    rows: list[ForwardRow]


class AttributeRequest(_Body):
    prompt: Prompt
    hooks: Annotated[list[HookName], Field(min_length=1, max_length=64)]
    objective: Objective
    interventions: Interventions = []


class HookAttribution(BaseModel):
    attribution: list[float]
    """Activation x gradient summed over width, per token."""
    gradient_norm: list[float]


class AttributeResponse(BaseModel):
    tokens: list[int]
    objective: float
    hooks: dict[str, HookAttribution]


class HookPointInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class VectorUpload(_Body):
    vector: Annotated[list[float], Field(min_length=1, max_length=MAX_WIDTH)]
    hook: HookName
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] | None = None


class VectorInfo(BaseModel):
    id: str
    name: str | None
    hook: str
    width: int
    norm: float
    source: Literal["spec", "upload"]


class SAEInfo(BaseModel):
    name: str
    hook: str
    d_in: int
    d_sae: int


class ErrorBody(BaseModel):
    detail: Any


# -- OpenAI-compatible bodies (unknown fields are accepted and ignored, as OpenAI clients send extras) ------------


class _OpenAIBody(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: Annotated[str, Field(max_length=256)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0, le=1 << 20)] | None = None
    seed: Annotated[int, Field(ge=0, lt=1 << 63)] | None = None
    stop: Stops = None
    stream: bool = False
    n: Annotated[int, Field(ge=1, le=16)] = 1
    interventions: Interventions = []
    """Extension: interventions applied to this request's rows."""


class CompletionRequest(_OpenAIBody):
    prompt: Prompts
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: Literal[False] = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Annotated[str, Field(max_length=MAX_TEXT)] | None = None


class ChatRequest(_OpenAIBody):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=0)] | None = None
