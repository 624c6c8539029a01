"""Install hooks for one forward pass and always remove them (also when the pass raises)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .hookpoints import HookPointError, Site, first_tensor

SiteFn = Callable[[torch.Tensor], torch.Tensor]
Handle = torch.utils.hooks.RemovableHandle


class StopForward(Exception):
    """Raised from a hook once every requested activation is recorded; caught by the caller of the pass."""


def _replace_first(value: Any, new: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return new
    if isinstance(value, tuple):
        return (new, *value[1:])
    return [new, *value[1:]]


def _hidden_states(site: Site, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, bool]:
    """The module's ``hidden_states`` argument, and whether it was passed positionally."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0], True
    if isinstance(kwargs.get("hidden_states"), torch.Tensor):
        return kwargs["hidden_states"], False
    raise HookPointError(f"{site.describe()}: the module was called without a hidden_states tensor")


def _output_tensor(site: Site, output: Any) -> torch.Tensor:
    tensor = first_tensor(output)
    if tensor is None:
        raise HookPointError(f"{site.describe()} returned {type(output).__name__}, not a tensor")
    return tensor


def _install(model: nn.Module, site: Site, fn: SiteFn, gate: Callable[[], bool] | None = None) -> list[Handle]:
    """Register ``fn`` at ``site``; with a ``gate``, the hooks do nothing at all in passes where it returns False."""
    module = model.get_submodule(site.module_path)
    if site.kind == "output":

        def output_hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if gate is not None and not gate():
                return None
            tensor = _output_tensor(site, output)
            new = fn(tensor)
            return None if new is tensor else _replace_first(output, new)

        return [module.register_forward_hook(output_hook)]

    if site.kind == "input":

        def input_hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if gate is not None and not gate():
                return None
            tensor, positional = _hidden_states(site, args, kwargs)
            new = fn(tensor)
            if new is tensor:
                return None
            return ((new, *args[1:]), kwargs) if positional else (args, {**kwargs, "hidden_states": new})

        return [module.register_forward_pre_hook(input_hook, with_kwargs=True)]

    return _install_residual(model, module, site, fn, gate)


def _install_residual(model: nn.Module, module: nn.Module, site: Site, fn: SiteFn,
                      gate: Callable[[], bool] | None) -> list[Handle]:
    """``fn`` sees ``sublayer + skip`` and the sublayer returns ``fn(...) - skip``: the block's sum is the edit.

    The skip tensor is read at the input of the block's first module, after every edit of the block's input.
    """
    if site.skip_from is None:
        raise HookPointError(f"{site.describe()}: a residual site names the module whose input is the skip")
    skips: list[torch.Tensor] = []

    def remember_skip(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if gate is None or gate():
            skips[:] = [_hidden_states(site, args, kwargs)[0]]

    def residual_hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if gate is not None and not gate():
            return None
        sublayer = _output_tensor(site, output)
        if not skips:
            raise HookPointError(f"{site.describe()}: {site.skip_from} did not run before {site.module_path}")
        skip = skips.pop()
        # The same operands as the block's own residual addition, so the value is bit-identical to the stream.
        stream = sublayer + skip
        new = fn(stream)
        # A stand-in for gradients (stream.detach().requires_grad_()) shares the stream's memory: same values.
        unchanged = new is stream or _aliases(new, stream)
        if unchanged and not new.requires_grad:
            return None
        returned = sublayer if unchanged else new - skip
        if new.requires_grad:
            # Values stay `returned`; gradients reach the block's sum only through `new` (the tensor fn recorded or
            # produced), so d/d(new) covers both the MLP and the skip path, each once.
            returned = returned.detach() + (new - new.detach())
            if skip.requires_grad:
                returned = returned - (skip - skip.detach())
        return _replace_first(output, returned)

    skip_module = model.get_submodule(site.skip_from)
    return [skip_module.register_forward_pre_hook(remember_skip, with_kwargs=True),
            module.register_forward_hook(residual_hook)]


def _aliases(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def _token_view(fn: SiteFn, batch: int, seq: int) -> SiteFn:
    """Show ``fn`` a flattened [batch * seq, width] activation (e.g. OPT's fc2) as [batch, seq, width]."""

    def viewed(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[0] != batch * seq:
            return fn(x)
        tokens = x.reshape(batch, seq, x.shape[1])
        new = fn(tokens)
        return x if new is tokens and not new.requires_grad else new.reshape(x.shape)

    return viewed


@contextlib.contextmanager
def hooks_installed(model: nn.Module, fns: Mapping[Site, SiteFn],
                    token_shape: tuple[int, int] | None = None) -> Iterator[None]:
    """Register one hook per site for the duration of the block; every handle is removed on exit.

    Residual sites are installed last, so an edit of the sublayer output they share (attn_out) runs before them.
    With ``token_shape`` (batch, seq), flattened [batch * seq, width] activations reach ``fn`` as [batch, seq, width].
    """
    handles: list[Handle] = []
    try:
        for site, fn in _install_order(fns):
            handles += _install(model, site, fn if token_shape is None else _token_view(fn, *token_shape))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _install_order(fns: Mapping[Site, SiteFn]) -> list[tuple[Site, SiteFn]]:
    return sorted(fns.items(), key=lambda item: item[0].kind == "residual")


class StandingHooks:
    """Hooks that stay registered over many passes (a decode loop), each calling the function set for its site.

    Registering and removing hooks around every pass costs more than a small edit does. These hooks act only inside
    :meth:`active`; in any other pass on the model (a capture between two decode steps) they do nothing at all.
    New functions for the same sites are swapped in without touching the hooks; another set of sites is
    registered anew, in :func:`hooks_installed`'s order.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._fns: Mapping[Site, SiteFn] = {}
        self._table: dict[Site, SiteFn] = {}
        self._handles: list[Handle] = []
        self._on = False

    def set(self, fns: Mapping[Site, SiteFn]) -> None:
        if fns is self._fns:
            return
        if fns.keys() != self._table.keys():
            self.clear()
            for site, _ in _install_order(fns):
                self._handles += _install(self.model, site, self._dispatcher(site), gate=self._is_on)
        self._fns = fns
        self._table.clear()
        self._table.update(fns)

    def clear(self) -> None:
        """Remove every hook from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._fns = [], {}
        self._table.clear()

    def active(self) -> StandingHooks:
        """``with hooks.active():`` the hooks edit the passes run inside the block."""
        return self

    def __enter__(self) -> None:
        self._on = True

    def __exit__(self, *_exc: object) -> None:
        self._on = False

    def _is_on(self) -> bool:
        return self._on

    def _dispatcher(self, site: Site) -> SiteFn:
        return lambda x: self._table[site](x)


def call_model(module: nn.Module, batch: Mapping[str, torch.Tensor]) -> Any | None:
    """Run the pass; ``None`` when a hook stopped it early."""
    kwargs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    try:
        return module(**kwargs, use_cache=False)
    except StopForward:
        return None
