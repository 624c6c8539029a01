"""Install hooks for one forward pass and always remove them (also when the pass raises)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .hookpoints import HookPointError, Site, first_tensor

SiteFn = Callable[[torch.Tensor], torch.Tensor]


class StopForward(Exception):
    """Raised from a hook once every requested activation is recorded; caught by the caller of the pass."""


def _replace_first(value: Any, new: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return new
    if isinstance(value, tuple):
        return (new, *value[1:])
    return [new, *value[1:]]


def _install(model: nn.Module, site: Site, fn: SiteFn) -> torch.utils.hooks.RemovableHandle:
    module = model.get_submodule(site.module_path)
    if site.kind == "output":

        def output_hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            tensor = first_tensor(output)
            if tensor is None:
                raise HookPointError(f"{site.describe()} returned {type(output).__name__}, not a tensor")
            new = fn(tensor)
            return None if new is tensor else _replace_first(output, new)

        return module.register_forward_hook(output_hook)

    def input_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args and isinstance(args[0], torch.Tensor):
            new = fn(args[0])
            return None if new is args[0] else ((new, *args[1:]), kwargs)
        if isinstance(kwargs.get("hidden_states"), torch.Tensor):
            tensor = kwargs["hidden_states"]
            new = fn(tensor)
            return None if new is tensor else (args, {**kwargs, "hidden_states": new})
        raise HookPointError(f"{site.describe()}: the module was called without a hidden_states tensor")

    return module.register_forward_pre_hook(input_hook, with_kwargs=True)


@contextlib.contextmanager
def hooks_installed(model: nn.Module, fns: Mapping[Site, SiteFn]) -> Iterator[None]:
    """Register one hook per site for the duration of the block; every handle is removed on exit."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for site, fn in fns.items():
            handles.append(_install(model, site, fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def call_model(module: nn.Module, batch: Mapping[str, torch.Tensor]) -> Any | None:
    """Run the pass; ``None`` when a hook stopped it early."""
    kwargs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    try:
        return module(**kwargs, use_cache=False)
    except StopForward:
        return None
