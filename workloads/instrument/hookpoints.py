"""Resolve hook names (canonical or module paths) to a module and the tensor on that module to read or edit."""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .families import Family, UnsupportedModelError, family_for

_CANONICAL = re.compile(r"^(resid_pre|resid_mid|resid_post|attn_out|mlp_out)\.(\d+)$")
_LAYERED = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")  # execution order


class HookPointError(ValueError):
    pass


@dataclass(frozen=True)
class Site:
    """A tensor inside the forward pass: the ``hidden_states`` input or the (first) output of a module.

    ``residual``: the sum ``output of module_path + input of skip_from``, the residual stream a block forms after a
    sublayer (resid_mid). Reading or editing it edits the stream itself: the hook returns ``edited - skip`` as the
    sublayer's output, so the block's own addition produces the edited stream for every later reader.
    """

    module_path: str
    kind: Literal["input", "output", "residual"]
    skip_from: str | None = None

    def describe(self) -> str:
        if self.kind == "residual":
            return f"output of {self.module_path} plus the input of {self.skip_from}"
        return f"{self.kind} of {self.module_path or '<model>'}"


def _family_or_none(model: nn.Module) -> Family | None:
    try:
        return family_for(model.config)
    except UnsupportedModelError:
        return None


def num_layers(model: nn.Module) -> int:
    family = family_for(model.config)
    blocks = model.get_submodule(family.blocks)
    return len(blocks)  # type: ignore[arg-type]  # a ModuleList


def canonical_names(model: nn.Module) -> list[str]:
    """Every canonical hook name the model has, in execution order."""
    family = _family_or_none(model)
    if family is None:
        return []
    names = ["embed"]
    for i in range(num_layers(model)):
        names += [f"{kind}.{i}" for kind in _LAYERED if kind != "resid_mid" or family.has_resid_mid(model.config)]
    return [*names, "final"]


def _valid_names_message(model: nn.Module) -> str:
    family = _family_or_none(model)
    if family is None:
        model_type = getattr(model.config, "model_type", None)
        return f"model_type {model_type!r} has no canonical names; use a module path"
    n = num_layers(model)
    kinds = [k for k in _LAYERED if k != "resid_mid" or family.has_resid_mid(model.config)]
    layered = ", ".join(f"{k}.{{0..{n - 1}}}" for k in kinds)
    return (
        f"valid canonical names: embed, {layered}, final; or a module path such as "
        f"'{family.blocks}.0.{family.mlp_out}'"
    )


# Resolution runs on every call of the hot capture path; a model's structure does not change under it.
_RESOLVED: weakref.WeakKeyDictionary[nn.Module, dict[str, Site]] = weakref.WeakKeyDictionary()


def resolve(model: nn.Module, name: str) -> Site:
    """Map a hook name to a :class:`Site`; raise :class:`HookPointError` listing valid names when it is unknown."""
    known = _RESOLVED.setdefault(model, {})
    site = known.get(name)
    if site is None:
        site = known[name] = _resolve(model, name)
    return site


def _resolve(model: nn.Module, name: str) -> Site:
    family = _family_or_none(model)
    if family is not None:
        if name == "embed":
            return Site(f"{family.blocks}.0", "input")
        if name == "final":
            return Site(family.final_norm, "output")
        match = _CANONICAL.match(name)
        if match:
            kind, layer = match.group(1), int(match.group(2))
            n = num_layers(model)
            if layer >= n:
                raise HookPointError(f"hook {name!r}: the model has {n} layers (0..{n - 1}); "
                                     + _valid_names_message(model))
            block = f"{family.blocks}.{layer}"
            if kind == "resid_pre":
                return Site(block, "input")
            if kind == "resid_post":
                return Site(block, "output")
            if kind == "attn_out":
                return Site(f"{block}.{family.attn_out}", "output")
            if kind == "mlp_out":
                return Site(f"{block}.{family.mlp_out}", "output")
            if not family.has_resid_mid(model.config):
                raise HookPointError(f"hook {name!r}: this {family.name} model has a parallel residual "
                                     "(attention and MLP read the same stream), so resid_mid does not exist")
            return Site(f"{block}.{family.attn_out}", "residual", skip_from=f"{block}.{family.input_norm}")
    if name and name != "embed" and not _CANONICAL.match(name) and name != "final":
        try:
            model.get_submodule(name)
        except AttributeError:
            pass
        else:
            return Site(name, "output")
    raise HookPointError(f"unknown hook point {name!r}; " + _valid_names_message(model))


@dataclass(frozen=True)
class HookPoint:
    name: str
    site: Site
    shape: tuple[int, ...]  # per token: the trailing dimensions after [batch, seq]
    dtype: torch.dtype


def first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None
