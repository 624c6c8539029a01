"""Capture, intervene and attribute on a Hugging Face causal LM in one forward (and backward) pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from ..spec import (
    Ablation,
    AddVector,
    CaptureSpec,
    DType,
    FunctionEdit,
    LocalIntervention,
    Objective,
    Positions,
    Projection,
    Replace,
    SAESplice,
    intervention_adapter,
    positions_adapter,
)
from .edits import InterventionError, apply_row_edits, last_positions, position_index
from .hookpoints import HookPoint, Site, canonical_names, first_tensor, resolve
from .runtime import StopForward, call_model, hooks_installed
from .sae import SAE


class _WithTokenizer(Protocol):
    """What ``interp_workloads.models.LoadedModel`` offers: the model and a tokenizer for text batches."""

    model: nn.Module

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]: ...


Model = nn.Module | _WithTokenizer
# A tokenizer's output, a [batch, seq] (or [seq]) tensor of token ids, or text when the model is a LoadedModel.
Batch = Mapping[str, torch.Tensor] | torch.Tensor | str | list[str]
Edit = LocalIntervention | Mapping[str, Any]
# One edit or a flat list of edits: every row; a list with one list (or None) per row: each row its own.
Interventions = Edit | Sequence[Edit] | Sequence[Sequence[Edit] | None]
RowInterventionList = Interventions

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ForwardResult:
    logits: torch.Tensor
    activations: dict[str, torch.Tensor]


@dataclass
class Attribution:
    """Per hook: the activation, d(objective)/d(activation), and their product summed over width ([batch, seq])."""

    objective: torch.Tensor  # [batch]: the per-row scalar that was differentiated
    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    attribution: dict[str, torch.Tensor]


def _mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    return torch.ones_like(ids) if mask is None else mask


def _texts(batch: object) -> list[str] | None:
    if isinstance(batch, str):
        return [batch]
    if isinstance(batch, list) and batch and all(isinstance(t, str) for t in batch):
        return batch
    return None


def _model_and_batch(model: Model, batch: Any) -> tuple[nn.Module, Mapping[str, torch.Tensor]]:
    """Accept a LoadedModel (then text is tokenized with its tokenizer) and a plain tensor of token ids."""
    texts = _texts(batch)
    if not isinstance(model, nn.Module):
        inner = getattr(model, "model", None)
        if not isinstance(inner, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module or a LoadedModel, got {type(model).__name__}")
        if texts is not None:
            return inner, model.tokenize(texts)
        model = inner
    if texts is not None:
        raise ValueError("batch: text needs a tokenizer; pass the LoadedModel from load_model(...) or token ids")
    if isinstance(batch, torch.Tensor):
        ids = batch if batch.dim() == 2 else batch[None]
        return model, {"input_ids": ids.to(next(model.parameters()).device)}
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise ValueError("batch: expected token ids, a mapping with 'input_ids' (a tokenizer's output) or text "
                         f"with a LoadedModel; got {type(batch).__name__}")
    return model, batch


def _as_hooks(hooks: str | Sequence[str]) -> list[str]:
    return [hooks] if isinstance(hooks, str) else list(hooks)


def _as_positions(positions: Any) -> Positions:
    try:
        return positions_adapter.validate_python(positions)
    except ValidationError as error:
        raise ValueError("positions: " + "; ".join(e["msg"].removeprefix("Value error, ")
                                                   for e in error.errors())) from None


def _as_edit(item: Any, where: str) -> LocalIntervention | None:
    """The edit ``item`` is (parsing a JSON-style dict), or None when it is not one."""
    if isinstance(item, BaseModel):
        if isinstance(item, _EDIT_TYPES):
            return item
        raise InterventionError(f"{where}: {type(item).__name__} is not an intervention")
    if isinstance(item, Mapping) and "kind" in item:
        try:
            return intervention_adapter.validate_python(item)
        except ValidationError as error:
            raise InterventionError(f"{where}: {error}") from None
    return None


_EDIT_TYPES = (AddVector, Projection, Ablation, Replace, SAESplice, FunctionEdit)

_FORMS = ("give one edit or a flat list of edits for every row (e.g. [AddVector(...)]), or one list (or None) "
          "per row (e.g. [[AddVector(...)], []])")


def _rows_of_edits(interventions: Interventions | None, batch_size: int) -> list[list[LocalIntervention]]:
    """One list of edits per row from any accepted form."""
    if interventions is None:
        return [[] for _ in range(batch_size)]
    single = _as_edit(interventions, "interventions")
    if single is not None:
        return [[single] for _ in range(batch_size)]
    if isinstance(interventions, str | bytes | Mapping) or not isinstance(interventions, Sequence):
        raise InterventionError(f"interventions: {_FORMS}; got {type(interventions).__name__}")
    items = list(interventions)
    edits = [_as_edit(item, f"interventions[{i}]") for i, item in enumerate(items)]
    if all(e is not None for e in edits):
        return [list(edits) for _ in range(batch_size)]  # type: ignore[arg-type]
    if not all(item is None or _is_edit_list(item) for item in items):
        raise InterventionError(f"interventions: {_FORMS}; got {_describe(items, edits)}")
    if len(items) != batch_size:
        raise InterventionError(f"got interventions for {len(items)} rows but the batch has {batch_size}")
    rows: list[list[LocalIntervention]] = []
    for row, item in enumerate(items):
        parsed = [_as_edit(e, f"interventions[{row}][{j}]") for j, e in enumerate(item or ())]
        if any(e is None for e in parsed):
            bad = next(j for j, e in enumerate(parsed) if e is None)
            raise InterventionError(f"interventions[{row}][{bad}]: expected an intervention, got "
                                    f"{type(item[bad]).__name__}")  # type: ignore[index]
        rows.append(parsed)  # type: ignore[arg-type]
    return rows


def _describe(items: list[Any], edits: list[LocalIntervention | None]) -> str:
    """Which item breaks the form: a list next to an edit, or something that is neither."""
    neither = next((i for i, (item, e) in enumerate(zip(items, edits, strict=True))
                    if e is None and not (item is None or _is_edit_list(item))), None)
    if neither is not None:
        return f"item {neither}, a {type(items[neither]).__name__}, which is neither an edit nor a list of edits"
    edit = next(i for i, e in enumerate(edits) if e is not None)
    row = next(i for i, e in enumerate(edits) if e is None)
    return (f"a mixture: item {edit} is an edit ({type(items[edit]).__name__}) and item {row} is a per-row "
            f"{'None' if items[row] is None else 'list'}")


def _is_edit_list(item: object) -> bool:
    return isinstance(item, Sequence) and not isinstance(item, str | bytes | Mapping)


def _plan_edits(
    model: nn.Module, batch_size: int, interventions: Interventions | None, saes: Mapping[str, SAE]
) -> dict[Site, list[tuple[int, LocalIntervention]]]:
    """Group (row, intervention) pairs by site, checking everything that can be checked before the pass.

    Entries of one edit object shared by consecutive rows stay adjacent, so it is applied to those rows at once.
    """
    rows = _rows_of_edits(interventions, batch_size)
    by_site: dict[Site, list[tuple[int, LocalIntervention]]] = {}
    depth = max((len(edits) for edits in rows), default=0)
    for j in range(depth):
        for row, edits in enumerate(rows):
            if j >= len(edits):
                continue
            edit = edits[j]
            if isinstance(edit, SAESplice) and edit.sae not in saes:
                raise InterventionError(f"row {row}: SAE {edit.sae!r} is not loaded; loaded: {sorted(saes) or 'none'}")
            by_site.setdefault(resolve(model, edit.hook), []).append((row, edit))
    return by_site


def _select(x: torch.Tensor, positions: Positions, last: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Positions of a [batch, seq, ...] activation as a fresh tensor that holds nothing else alive."""
    x = x.detach()
    if positions == "last":
        x = x[torch.arange(x.shape[0], device=x.device), last]
    elif positions != "all":
        x = x[:, position_index(positions, x.shape[1], 0, x.device)]
    return x if dtype is None else x.to(dtype)


def _run(
    model: Model,
    batch: Batch,
    hooks: str | Sequence[str],
    *,
    positions: Positions = "all",
    dtype: DType | None = None,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
    stop_early: bool = False,
    keep_graph: bool = False,
) -> tuple[object | None, dict[str, torch.Tensor]]:
    saes = saes or {}
    model, batch = _model_and_batch(model, batch)
    positions = _as_positions(positions)
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(_DTYPES)}, got {dtype!r}")
    names_at: dict[Site, list[str]] = {}
    for name in _as_hooks(hooks):
        names_at.setdefault(resolve(model, name), []).append(name)
    batch_size, seq_len = batch["input_ids"].shape
    edits_at = _plan_edits(model, batch_size, interventions, saes)
    # Only "last" positions and edits need each row's last token; skip the extra ops for plain captures.
    needs_last = positions == "last" or bool(edits_at)
    last = last_positions(_mask(batch)) if needs_last else batch["input_ids"].new_zeros(0)
    cast = _DTYPES[dtype] if dtype else None
    recorded: dict[Site, torch.Tensor] = {}
    pending = set(names_at)

    def site_fn(site: Site):  # type: ignore[no-untyped-def]
        edits = edits_at.get(site, ())
        record = site in names_at

        def fn(x: torch.Tensor) -> torch.Tensor:
            if edits:
                x = apply_row_edits(x, edits, last, saes)
            if record:
                if keep_graph:
                    # A leaf stand-in when nothing upstream needs grad (e.g. frozen weights): same value, same use.
                    if not x.requires_grad:
                        x = x.detach().requires_grad_()
                    recorded[site] = x
                else:
                    recorded[site] = _select(x, positions, last, cast)
                pending.discard(site)
                if stop_early and not pending:
                    raise StopForward
            return x

        return fn

    target: nn.Module = model
    if stop_early:
        prefix = getattr(model, "base_model_prefix", "")
        base = getattr(model, prefix, None) if prefix else None
        # The unembedding is the costliest layer of a small model: skip it when no site lives outside the base.
        if isinstance(base, nn.Module) and all(s.module_path.startswith(prefix + ".") for s in (*names_at, *edits_at)):
            target = base
    fns = {s: site_fn(s) for s in {*names_at, *edits_at}}
    with hooks_installed(model, fns, token_shape=(batch_size, seq_len)):
        output = call_model(target, batch)
    missing = [name for s in pending for name in names_at[s]]
    if missing:
        raise RuntimeError(f"hooks {missing} never ran in this forward pass")
    return output, {name: recorded[s] for s, names in names_at.items() for name in names}


def capture(
    model: Model,
    batch: Batch,
    hooks: str | Sequence[str],
    *,
    positions: Positions = "all",
    dtype: DType | None = None,
    stop_early: bool = True,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
) -> dict[str, torch.Tensor]:
    """Activations at ``hooks``: [batch, seq, ...] for "all", [batch, ...] for "last", else [batch, n, ...].

    With ``stop_early`` no layer after the last requested hook runs. Interventions are applied first, so a
    hook that is both edited and captured records the edited value (what the rest of the model sees).
    """
    with torch.no_grad():
        _, acts = _run(model, batch, hooks, positions=positions, dtype=dtype, interventions=interventions,
                       saes=saes, stop_early=stop_early)
    return acts


def capture_from_spec(
    model: Model,
    batch: Batch,
    spec: CaptureSpec,
    *,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`capture` driven by a serialised :class:`CaptureSpec` (what dump jobs and the server receive)."""
    return capture(model, batch, spec.hooks, positions=spec.positions, dtype=spec.dtype, stop_early=spec.stop_early,
                   interventions=interventions, saes=saes)


def forward(
    model: Model,
    batch: Batch,
    *,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
    hooks: str | Sequence[str] = (),
    positions: Positions = "all",
    dtype: DType | None = None,
) -> ForwardResult:
    """Logits of the (optionally edited) model, plus any captures.

    ``interventions``: one edit or a flat list for every row, or one list (or None) per batch row.
    """
    with torch.no_grad():
        output, acts = _run(model, batch, hooks, positions=positions, dtype=dtype, interventions=interventions,
                            saes=saes)
    assert output is not None
    return ForwardResult(logits=output.logits, activations=acts)  # type: ignore[attr-defined]


def _objective_values(objective: Objective, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    rows = torch.arange(logits.shape[0], device=logits.device)
    mask = _mask(batch)
    if objective.kind == "loss":
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = batch["input_ids"][:, 1:]
        token_lp = logprobs.gather(-1, targets[..., None])[..., 0]
        valid = (mask[:, 1:] * mask[:, :-1]).to(token_lp.dtype)
        return -(token_lp * valid).sum(1) / valid.sum(1).clamp(min=1)
    seq = logits.shape[1]
    if objective.position == "last":
        pos = last_positions(mask)
    elif -seq <= objective.position < seq:
        pos = torch.full_like(rows, objective.position % seq)
    else:
        raise InterventionError(f"objective position {objective.position} is outside a sequence of length {seq}")
    token = objective.token
    if isinstance(token, list) and len(token) != logits.shape[0]:
        raise InterventionError(f"objective has {len(token)} tokens for a batch of {logits.shape[0]} rows")
    tokens = torch.as_tensor(token, device=logits.device).expand(logits.shape[0])
    if int(tokens.max()) >= logits.shape[-1]:
        raise InterventionError(f"objective token {int(tokens.max())} is outside the vocabulary ({logits.shape[-1]})")
    picked = logits[rows, pos].float()
    if objective.kind == "logprob":
        picked = torch.log_softmax(picked, dim=-1)
    return picked[rows, tokens]


def attribute(
    model: Model,
    batch: Batch,
    hooks: str | Sequence[str],
    objective: Objective | Mapping[str, Any],
    *,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
) -> Attribution:
    """Gradients of the per-row objective w.r.t. the activations at ``hooks``, and activation x gradient.

    Rows are independent, so differentiating the sum of the per-row objectives gives each row its own gradient.
    No parameter gradients are accumulated.
    """
    model, batch = _model_and_batch(model, batch)
    if not isinstance(objective, Objective):
        objective = Objective.model_validate(objective)
    with torch.enable_grad():
        output, acts = _run(model, batch, hooks, interventions=interventions, saes=saes, keep_graph=True)
        assert output is not None
        values = _objective_values(objective, output.logits, batch)  # type: ignore[attr-defined]
        names = list(acts)
        grads = torch.autograd.grad(values.sum(), [acts[n] for n in names], allow_unused=True)
    gradients = {n: torch.zeros_like(acts[n]) if g is None else g for n, g in zip(names, grads, strict=True)}
    activations = {n: acts[n].detach() for n in names}
    return Attribution(
        objective=values.detach(),
        activations=activations,
        gradients=gradients,
        attribution={n: (activations[n].float() * gradients[n].float()).sum(-1) for n in names},
    )


def hook_points(model: Model, *, include_modules: bool = False) -> list[HookPoint]:
    """Canonical hook points with per-token shapes, in the order the forward pass reaches them.

    ``include_modules`` adds every module whose output is per token ([batch, seq, ...], or [batch * seq, ...]
    for modules that flatten tokens), each at the moment its output exists (canonical names first at a tie).
    """
    model, batch = _model_and_batch(model, torch.zeros(1, 3, dtype=torch.long))
    names_at: dict[Site, list[str]] = {}
    for name in canonical_names(model):
        names_at.setdefault(resolve(model, name), []).append(name)
    reached: dict[str, HookPoint] = {}

    def canonical(site: Site):  # type: ignore[no-untyped-def]
        def record(x: torch.Tensor) -> torch.Tensor:
            for name in names_at[site]:
                reached.setdefault(name, HookPoint(name, site, tuple(x.shape[2:]), x.dtype))
            return x

        return record

    def module(path: str):  # type: ignore[no-untyped-def]
        def record(_module: nn.Module, _args: object, output: object) -> None:
            tensor = first_tensor(output)
            if tensor is None or path in reached:
                return
            if tensor.dim() >= 3 and tuple(tensor.shape[:2]) == (1, 3):
                reached[path] = HookPoint(path, Site(path, "output"), tuple(tensor.shape[2:]), tensor.dtype)
            elif tensor.dim() == 2 and tensor.shape[0] == 3:
                reached[path] = HookPoint(path, Site(path, "output"), tuple(tensor.shape[1:]), tensor.dtype)

        return record

    with hooks_installed(model, {site: canonical(site) for site in names_at}, token_shape=(1, 3)):
        handles = [m.register_forward_hook(module(p)) for p, m in model.named_modules() if p] if include_modules else []
        try:
            with torch.no_grad():
                call_model(model, batch)
        finally:
            for handle in handles:
                handle.remove()
    missing = [name for names in names_at.values() for name in names if name not in reached]
    if missing:
        raise RuntimeError(f"hooks {missing} never ran in this forward pass")
    return list(reached.values())
