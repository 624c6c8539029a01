"""Per-kind adapters of the gang engine, one module per kind (adapter and status presentation together)."""

from . import dump, service, train
from .base import Adapter

ADAPTERS: dict[str, Adapter] = {a.info.kind: a for a in (train.adapter(), dump.adapter(), service.adapter())}

__all__ = ["ADAPTERS", "Adapter"]
