"""Capture, intervene and attribute on a Hugging Face causal LM in one forward (and backward) pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..spec import CaptureSpec, DType, Intervention, Objective, Positions, SAESplice
from .edits import InterventionError, apply_row_edits, last_positions, position_index
from .hookpoints import HookPoint, Site, canonical_names, first_tensor, resolve
from .runtime import StopForward, call_model, hooks_installed
from .sae import SAE

Batch = Mapping[str, torch.Tensor]
RowInterventionList = Sequence[Sequence[Intervention] | None]

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


def _mask(batch: Batch) -> torch.Tensor:
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    return torch.ones_like(ids) if mask is None else mask


def _plan_edits(
    model: nn.Module, batch_size: int, interventions: RowInterventionList | None, saes: Mapping[str, SAE]
) -> dict[Site, list[tuple[int, Intervention]]]:
    """Group (row, intervention) pairs by site, checking everything that can be checked before the pass."""
    if interventions is None:
        return {}
    if len(interventions) != batch_size:
        raise InterventionError(f"got interventions for {len(interventions)} rows but the batch has {batch_size}")
    by_site: dict[Site, list[tuple[int, Intervention]]] = {}
    for row, edits in enumerate(interventions):
        for edit in edits or ():
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
    model: nn.Module,
    batch: Batch,
    hooks: Sequence[str],
    *,
    positions: Positions = "all",
    dtype: DType | None = None,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
    stop_early: bool = False,
    keep_graph: bool = False,
) -> tuple[object | None, dict[str, torch.Tensor]]:
    saes = saes or {}
    names_at: dict[Site, list[str]] = {}
    for name in hooks:
        names_at.setdefault(resolve(model, name), []).append(name)
    edits_at = _plan_edits(model, batch["input_ids"].shape[0], interventions, saes)
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
    with hooks_installed(model, {s: site_fn(s) for s in {*names_at, *edits_at}}):
        output = call_model(target, batch)
    missing = [name for s in pending for name in names_at[s]]
    if missing:
        raise RuntimeError(f"hooks {missing} never ran in this forward pass")
    return output, {name: recorded[s] for s, names in names_at.items() for name in names}


def capture(
    model: nn.Module,
    batch: Batch,
    hooks: Sequence[str],
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
    model: nn.Module,
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
    model: nn.Module,
    batch: Batch,
    *,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
    hooks: Sequence[str] = (),
    positions: Positions = "all",
    dtype: DType | None = None,
) -> ForwardResult:
    """Logits of the (optionally edited) model, one list of interventions per batch row, plus any captures."""
    with torch.no_grad():
        output, acts = _run(model, batch, hooks, positions=positions, dtype=dtype, interventions=interventions,
                            saes=saes)
    assert output is not None
    return ForwardResult(logits=output.logits, activations=acts)  # type: ignore[attr-defined]


def _objective_values(objective: Objective, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
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
    model: nn.Module,
    batch: Batch,
    hooks: Sequence[str],
    objective: Objective,
    *,
    interventions: RowInterventionList | None = None,
    saes: Mapping[str, SAE] | None = None,
) -> Attribution:
    """Gradients of the per-row objective w.r.t. the activations at ``hooks``, and activation x gradient.

    Rows are independent, so differentiating the sum of the per-row objectives gives each row its own gradient.
    No parameter gradients are accumulated.
    """
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


def hook_points(model: nn.Module, *, include_modules: bool = False) -> list[HookPoint]:
    """Canonical hook points (and, optionally, every module with a [batch, seq, ...] output) with per-token shapes."""
    device = next(model.parameters()).device
    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long, device=device)}
    names = canonical_names(model)
    with torch.no_grad():
        _, acts = _run(model, batch, names)
    points = [HookPoint(n, resolve(model, n), tuple(acts[n].shape[2:]), acts[n].dtype) for n in names]
    if include_modules:
        seen: dict[str, torch.Tensor] = {}

        def recorder(path: str):  # type: ignore[no-untyped-def]
            def record(_module: nn.Module, _args: object, output: object) -> None:
                tensor = first_tensor(output)
                if tensor is not None and tensor.dim() >= 3 and tuple(tensor.shape[:2]) == (1, 3):
                    seen[path] = tensor

            return record

        handles = [m.register_forward_hook(recorder(p)) for p, m in model.named_modules() if p]
        try:
            with torch.no_grad():
                call_model(model, batch)
        finally:
            for handle in handles:
                handle.remove()
        points += [HookPoint(p, Site(p, "output"), tuple(t.shape[2:]), t.dtype) for p, t in seen.items()]
    return points
