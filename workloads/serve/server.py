"""What one server holds (model, SAEs, steering vectors, limits) and the checks a request passes before it runs.

Everything here is free of HTTP: :mod:`.app` maps :class:`RequestError` to status codes and bodies.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from interp_operator import logs

from ..instrument import HookPointError, InterventionError, hook_points, resolve
from ..instrument.edits import apply_row_edits
from ..instrument.sae import CONFIG_FILE as SAE_CONFIG_FILE
from ..instrument.sae import SAE, SparseAutoencoder
from ..models import LoadedModel
from ..sae import CONFIG_FILE as EXPORT_CONFIG_FILE
from ..sae import load_sae
from ..spec import MAX_NORM, AddVector, Intervention, Replace, SAESplice
from . import positions as pos
from .engine import Engine
from .metrics import Metrics
from .schemas import NamedVector, RequestIntervention
from .worker import Worker

log = logs.get_logger(__name__)


class RequestError(Exception):
    """A request this server will not run: ``status`` is the HTTP status, ``field`` the offending input."""

    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers or {}


@dataclass(frozen=True)
class Limits:
    max_batch_tokens: int = 8192
    max_new_tokens: int = 256
    max_concurrent_requests: int = 64
    request_timeout_seconds: float = 60.0
    max_request_bytes: int = 1 << 20


@dataclass
class SteeringVector:
    id: str
    name: str | None
    hook: str
    values: list[float]
    source: str

    @property
    def norm(self) -> float:
        return math.sqrt(math.fsum(v * v for v in self.values))


def content_id(values: Sequence[float], hook: str) -> str:
    """Content hash of a vector and its hook: the same upload always gets the same id."""
    digest = hashlib.sha256(hook.encode() + b"\0" + torch.tensor(values, dtype=torch.float32).numpy().tobytes())
    return "sv-" + digest.hexdigest()[:16]


def load_vector_file(path: Path) -> list[float]:
    tensors = load_file(str(path))
    if "vector" not in tensors:
        raise ValueError(f"{path}: expected a tensor named 'vector', found {sorted(tensors) or 'none'}")
    vector = tensors["vector"]
    if vector.dim() != 1:
        raise ValueError(f"{path}: 'vector' must have shape [d_model], got {tuple(vector.shape)}")
    return vector.float().tolist()


@dataclass
class Server:
    lm: LoadedModel
    saes: dict[str, SAE]
    sae_hooks: dict[str, str]
    limits: Limits
    model_name: str
    metrics: Metrics = field(default_factory=Metrics)
    vectors: dict[str, SteeringVector] = field(default_factory=dict)
    widths: dict[str, tuple[int, ...]] = field(default_factory=dict)
    sae_widths: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    worker: Worker | None = None
    in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Server:
        model = self.lm.model
        self.widths = {p.name: p.shape for p in hook_points(model, include_modules=True)}
        for name, hook in self.sae_hooks.items():
            self._check_sae(name, hook)
        engine = Engine(model, self.lm.tokenizer, self.saes, max_batch_tokens=self.limits.max_batch_tokens)
        self.worker = Worker(engine, self.metrics).start()
        self.ready = True
        return self

    def stop(self) -> None:
        self.ready = False
        if self.worker is not None:
            self.worker.stop()

    @property
    def max_positions(self) -> int | None:
        config = self.lm.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    def _check_sae(self, name: str, hook: str) -> None:
        sae = self.saes[name]
        probe = torch.zeros(1, sae.d_in, dtype=sae.dtype, device=self.lm.model.device)
        self.sae_widths[name] = int(sae.encode(probe).shape[-1])
        width = self.hook_width(hook, f"SAE {name!r}: hook point")
        if sae.d_in != width:
            raise ValueError(f"SAE {name!r} reads width {sae.d_in} but hook point {hook} has width {width}")

    # -- admission ------------------------------------------------------------------------------------------------

    def admit(self) -> None:
        with self._lock:
            if self.in_flight >= self.limits.max_concurrent_requests:
                self.metrics.rejections.labels("overloaded").inc()
                raise RequestError(429, "", f"{self.in_flight} requests in flight (the limit is "
                                   f"{self.limits.max_concurrent_requests}); retry later", {"Retry-After": "1"})
            self.in_flight += 1
            self.metrics.in_flight.set(self.in_flight)

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)

    # -- inputs ---------------------------------------------------------------------------------------------------

    def tokenize(self, prompt: str, field_name: str) -> list[int]:
        ids: list[int] = self.lm.tokenizer(prompt)["input_ids"]
        if not ids:
            raise RequestError(400, field_name, "the prompt is empty (it has no tokens)")
        return ids

    def check_lengths(self, prompt_len: int, max_new_tokens: int, field_name: str, new_field: str) -> None:
        if max_new_tokens > self.limits.max_new_tokens:
            raise RequestError(400, new_field, f"{max_new_tokens} new tokens asked; this server allows at most "
                               f"{self.limits.max_new_tokens}")
        total = prompt_len + max_new_tokens
        if total > self.limits.max_batch_tokens:
            self.metrics.rejections.labels("too_large").inc()
            raise RequestError(413, field_name, f"prompt ({prompt_len} tokens) plus {max_new_tokens} new tokens "
                               f"exceed the server's max batch tokens ({self.limits.max_batch_tokens})")
        if self.max_positions is not None and total > self.max_positions:
            raise RequestError(400, field_name, f"prompt ({prompt_len} tokens) plus {max_new_tokens} new tokens "
                               f"exceed the model's context of {self.max_positions} positions")

    def hook_width(self, hook: str, what: str) -> int:
        try:
            resolve(self.lm.model, hook)
        except HookPointError as error:
            raise ValueError(str(error) if what == "hook" else f"{what}: {error}") from None
        shape = self.widths.get(hook)
        if shape is None:
            raise ValueError(f"{what} {hook!r} has no per-token activation to edit")
        if len(shape) != 1:
            raise ValueError(f"{what} {hook!r} has per-token shape {list(shape)}; edits need a vector per token")
        return shape[0]

    def interventions(self, items: Sequence[RequestIntervention], prompt_lens: Sequence[int],
                      field_name: str = "interventions", generating: bool = True) -> list[Intervention]:
        """Named vectors resolved and every edit checked against this model, so a batch never fails on one row."""
        out: list[Intervention] = []
        for i, item in enumerate(items):
            where = f"{field_name}[{i}]"
            edit = self._resolve_named(item, where) if isinstance(item, NamedVector) else item
            try:
                width = self.hook_width(edit.hook, "hook")
                for n in prompt_lens:
                    pos.check(edit.positions, n)
                if isinstance(edit, SAESplice) and edit.sae not in self.saes:
                    raise ValueError(f"SAE {edit.sae!r} is not loaded; loaded: {sorted(self.saes) or 'none'}")
                if generating and isinstance(edit, Replace) and len(edit.values) != 1:
                    raise ValueError("replace during generation takes one row of values (applied at every "
                                     "selected position)")
                update: dict[str, Any] = {"positions": [0]}
                if isinstance(edit, Replace):
                    update["values"] = edit.values[:1]
                probe = edit.model_copy(update=update)
                apply_row_edits(torch.zeros(1, 1, width, dtype=self.lm.model.dtype, device=self.lm.model.device),
                                [(0, probe)], torch.zeros(1, dtype=torch.long), self.saes)
            except (ValueError, InterventionError) as error:
                raise RequestError(400, where, str(error)) from None
            out.append(edit)
        return out

    def _resolve_named(self, item: NamedVector, where: str) -> AddVector:
        vector = self.vectors.get(item.name) or next((v for v in self.vectors.values() if v.name == item.name), None)
        if vector is None:
            raise RequestError(400, f"{where}.name", f"no steering vector {item.name!r}; registered: "
                               f"{sorted(v.name or v.id for v in self.vectors.values()) or 'none'}")
        try:
            return AddVector(hook=item.hook or vector.hook, vector=vector.values, scale=item.scale,
                             positions=item.positions)
        except ValueError as error:
            raise RequestError(400, where, str(error)) from None

    # -- steering vectors -----------------------------------------------------------------------------------------

    def register_vector(self, values: list[float], hook: str, name: str | None, source: str) -> SteeringVector:
        width = self.hook_width(hook, "hook")
        if len(values) != width:
            raise ValueError(f"the vector has {len(values)} values but hook {hook} has width {width}")
        norm = math.sqrt(math.fsum(v * v for v in values))
        if not math.isfinite(norm) or norm > MAX_NORM:
            raise ValueError(f"the vector's norm {norm:.4g} exceeds the cap {MAX_NORM:g}")
        if name is not None and any(v.name == name and v.source == "spec" for v in self.vectors.values()):
            raise ValueError(f"the name {name!r} belongs to a vector from the service spec")
        vector_id = content_id(values, hook)
        with self._lock:
            known = self.vectors.get(vector_id)
            # Re-uploading the same content keeps its name (and a spec vector stays a spec vector).
            if known is not None and (name is None or known.source == "spec"):
                return known
            vector = SteeringVector(vector_id, name, hook, values, source)
            if name is not None:
                for other in [v for v in self.vectors.values() if v.name == name]:
                    del self.vectors[other.id]
            self.vectors[vector.id] = vector
        return vector


def load_saes(specs: dict[str, tuple[str, Path]], device: Any) -> tuple[dict[str, SAE], dict[str, str]]:
    saes: dict[str, SAE] = {}
    hooks: dict[str, str] = {}
    for name, (hook, directory) in specs.items():
        saes[name] = load_sae_folder(Path(directory), device)
        hooks[name] = hook
    return saes, hooks


def load_sae_folder(directory: Path, device: Any) -> SAE:
    """The instrumentation core's format (``sae_config.json``), or a trainer export / SAELens folder (``cfg.json``)."""
    if (directory / SAE_CONFIG_FILE).is_file():
        return SparseAutoencoder.load(directory, device=device)
    if not (directory / EXPORT_CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory}: neither {SAE_CONFIG_FILE} (interp-sae) nor {EXPORT_CONFIG_FILE} "
                                f"(an SAETrainingJob export or a SAELens folder) is there")
    coder = load_sae(directory, device=device)
    if coder.d_out != coder.d_in:
        raise ValueError(f"{directory}: a transcoder ({coder.d_in} -> {coder.d_out}) cannot be spliced at one hook "
                         f"point; serve an SAE")
    return coder
