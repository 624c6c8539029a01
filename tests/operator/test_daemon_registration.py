"""How the reconcile loops are registered with kopf: one daemon per kind, none holding a finalizer."""

from __future__ import annotations

import kopf

from interp_operator import handlers
from interp_operator.kinds import ADAPTERS


def _daemons() -> list:
    return [h for h in kopf.get_default_registry()._spawning.get_all_handlers() if h.id == "gang"]


def test_every_kind_has_one_reconcile_loop_and_none_requires_a_finalizer():
    """kopf would add its finalizer to every object for a daemon; objects must stay deletable without the operator
    (a kopf upgrade that renames what handlers._without_finalizer changes fails here, not on a cluster)."""
    daemons = _daemons()
    assert sorted(h.selector.any_name for h in daemons) == sorted(a.info.plural for a in ADAPTERS.values())
    assert [h.requires_finalizer for h in daemons] == [False] * len(ADAPTERS)
    # a failed loop is retried within seconds by kopf too, not after its default minute
    assert {h.backoff for h in daemons} == {handlers.ERROR_RETRY_S}


def test_no_other_handler_asks_kopf_for_a_finalizer():
    registry = kopf.get_default_registry()
    changing = registry._changing.get_all_handlers()
    assert [h for h in changing if h.requires_finalizer] == []
    assert [h for h in registry._spawning.get_all_handlers() if h.requires_finalizer] == []
