"""Watch streams: initial state or resourceVersion replay, selector transitions, bookmarks, timeouts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import table
from .api import Api
from .registry import ResourceType
from .selectors import make_filter
from .store import Event

Obj = dict[str, Any]
Send = Callable[[bytes], Awaitable[None]]


def _line(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


async def stream(api: Api, rt: ResourceType, namespace: str | None, params: dict[str, str], send: Send,
                 bookmark_interval: float, default_timeout: float, as_table: bool = False) -> None:
    """Serve one watch; with ``as_table`` each object is sent as a one-row Table (``kubectl get -w``)."""
    def render(obj: Obj) -> Obj:
        view = api.present(rt, obj)
        if as_table:
            return table.table(rt, [view], view["metadata"]["resourceVersion"], params.get("includeObject"))
        return view

    accept = make_filter(namespace, params.get("labelSelector"), params.get("fieldSelector"),
                         (*rt.field_labels, *rt.selectable_fields), rt.kind)
    rv_text = params.get("resourceVersion") or ""
    # Watch-list (sendInitialEvents): the current state as ADDED events, then a bookmark marking its end.
    initial_events = params.get("sendInitialEvents") == "true"
    since = None if rv_text in ("", "0") or initial_events else _parse_rv(rv_text)
    timeout = float(params.get("timeoutSeconds") or default_timeout)
    bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
    subscription = api.store.subscribe(rt.storage_key, since)
    if subscription is None:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": f"too old resource version: {rv_text} ({api.store.rv})", "reason": "Expired",
                  "code": 410}
        await send(_line("ERROR", status))
        return
    watcher, replay = subscription
    try:
        if since is None:
            initial = sorted((o for o in api.store.items(rt.storage_key) if accept(o)),
                             key=lambda o: int(o["metadata"]["resourceVersion"]))
            for obj in initial:
                await send(_line("ADDED", render(obj)))
            if initial_events:
                await send(_line("BOOKMARK", {
                    "kind": rt.kind, "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(api.store.rv),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}))
        for past in replay:
            await _send_event(past, accept, send, render)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                event = await asyncio.wait_for(watcher.queue.get(), min(left, bookmark_interval))
            except TimeoutError:
                if bookmarks and watcher.queue.empty():
                    await send(_line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                                  "metadata": {"resourceVersion": str(api.store.rv)}}))
                continue
            if event is None:  # the resource went away (CRD deleted)
                break
            await _send_event(event, accept, send, render)
        if bookmarks and watcher.queue.empty():
            await send(_line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                          "metadata": {"resourceVersion": str(api.store.rv)}}))
    finally:
        api.store.unsubscribe(watcher)


async def _send_event(event: Event, accept: Callable[[Obj], bool], send: Send, render: Callable[[Obj], Obj]) -> None:
    now_ok = accept(event.obj)
    was_ok = event.prev is not None and accept(event.prev)
    if event.type == "ADDED":
        kind = "ADDED" if now_ok else None
    elif event.type == "DELETED":
        kind = "DELETED" if (now_ok or was_ok) else None
    elif now_ok and was_ok:
        kind = "MODIFIED"
    elif now_ok:
        kind = "ADDED"
    elif was_ok:
        kind = "DELETED"
    else:
        kind = None
    if kind is not None:
        await send(_line(kind, render(event.obj)))


def _parse_rv(text: str) -> int:
    from .errors import bad_request

    try:
        return int(text)
    except ValueError as exc:
        raise bad_request(f"invalid resource version: {text!r}") from exc
