"""In-memory object storage with one global resourceVersion counter and a per-resource event history.

Stored objects are never mutated in place: every write stores a fresh dict, so the event history and
watchers can hold references without copying.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # (namespace or "", name)
Obj = dict[str, Any]


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    prev: Obj | None


@dataclass(eq=False)
class Watcher:
    storage_key: str
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)


class Store:
    def __init__(self, history_window: int = 20000):
        self.rv = 0
        self.history_window = history_window
        self._objects: dict[str, dict[Key, Obj]] = {}
        self._history: dict[str, deque[Event]] = {}
        # Oldest resourceVersion from which a watch can still replay, per storage key.
        self._replay_floor: dict[str, int] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._listeners: list[Callable[[str, Event], None]] = []
        # owner uid → dependents, for garbage collection.
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}

    # -- reads ------------------------------------------------------------------------------------------
    def get(self, storage_key: str, key: Key) -> Obj | None:
        return self._objects.get(storage_key, {}).get(key)

    def items(self, storage_key: str) -> Iterator[Obj]:
        yield from list(self._objects.get(storage_key, {}).values())

    def storage_keys(self) -> list[str]:
        return list(self._objects)

    def dependents(self, owner_uid: str) -> list[tuple[str, str, str]]:
        return sorted(self._dependents.get(owner_uid, ()))

    # -- writes -----------------------------------------------------------------------------------------
    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, storage_key: str, obj: Obj, rv: int | None = None) -> Obj:
        """Insert or replace; the object's metadata.resourceVersion is set to a fresh global version."""
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        version = rv if rv is not None else self.next_rv()
        meta["resourceVersion"] = str(version)
        bucket = self._objects.setdefault(storage_key, {})
        prev = bucket.get(key)
        bucket[key] = obj
        self._index_owners(storage_key, key, prev, obj)
        self._emit(storage_key, Event(version, "MODIFIED" if prev is not None else "ADDED", obj, prev))
        return obj

    def remove(self, storage_key: str, key: Key) -> Obj | None:
        bucket = self._objects.get(storage_key, {})
        prev = bucket.pop(key, None)
        if prev is None:
            return None
        version = self.next_rv()
        gone = {**prev, "metadata": {**prev["metadata"], "resourceVersion": str(version)}}
        self._index_owners(storage_key, key, prev, None)
        self._emit(storage_key, Event(version, "DELETED", gone, prev))
        return gone

    def drop_storage(self, storage_key: str) -> None:
        """Forget a whole resource (its CRD was deleted); watchers are closed."""
        for obj in list(self._objects.get(storage_key, {}).values()):
            meta = obj["metadata"]
            self.remove(storage_key, (meta.get("namespace") or "", meta["name"]))
        for watcher in self._watchers.pop(storage_key, set()):
            watcher.queue.put_nowait(None)

    # -- events -----------------------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[str, Event], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, storage_key: str, event: Event) -> None:
        history = self._history.setdefault(storage_key, deque())
        history.append(event)
        while len(history) > self.history_window:
            dropped = history.popleft()
            self._replay_floor[storage_key] = dropped.rv
        for watcher in self._watchers.get(storage_key, ()):
            watcher.queue.put_nowait(event)
        for listener in self._listeners:
            listener(storage_key, event)

    def compact(self, storage_key: str | None = None) -> None:
        """Forget the event history (what etcd compaction does): older watches then get 410 Gone."""
        keys = [storage_key] if storage_key else list(self._history)
        for key in keys:
            self._history.get(key, deque()).clear()
            self._replay_floor[key] = self.rv

    def subscribe(self, storage_key: str, since: int | None) -> tuple[Watcher, list[Event]] | None:
        """Register a watcher; with ``since``, also return the events after it (None when expired)."""
        replay: list[Event] = []
        if since is not None:
            if since < self._replay_floor.get(storage_key, 0):
                return None
            replay = [e for e in self._history.get(storage_key, ()) if e.rv > since]
        watcher = Watcher(storage_key)
        self._watchers.setdefault(storage_key, set()).add(watcher)
        return watcher, replay

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.storage_key, set()).discard(watcher)

    def _index_owners(self, storage_key: str, key: Key, prev: Obj | None, new: Obj | None) -> None:
        ref = (storage_key, key[0], key[1])
        for obj, add in ((prev, False), (new, True)):
            for owner in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
                uid = owner.get("uid")
                if not uid:
                    continue
                if add:
                    self._dependents.setdefault(uid, set()).add(ref)
                else:
                    deps = self._dependents.get(uid)
                    if deps is not None:
                        deps.discard(ref)
                        if not deps:
                            del self._dependents[uid]
