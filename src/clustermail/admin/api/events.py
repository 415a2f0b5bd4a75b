"""The event log, and one server-sent-events stream of everything that changes.

``GET /api/v1/events/stream`` sends, as ``text/event-stream``:

* ``event: status`` — the status document (as ``GET /api/v1/status``) at once and
  after every change of the cluster's keys (at most every ``STATUS_EVERY`` s);
* ``event: log`` — each new event-log entry;
* ``event: metrics`` — each new sample of the admin service's performance history;
* a comment line every ``KEEPALIVE`` s, so proxies and browsers keep the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from aiohttp import web

from clustermail.admin import intents
from clustermail.admin.api.cluster_routes import status_document
from clustermail.admin.api.routing import (
    ANY_OBJECT,
    NUMBER,
    STRING,
    Call,
    Param,
    Role,
    Route,
    array,
    obj,
)
from clustermail.cluster import eventlog, keys
from clustermail.coord import CoordError, Store

STATUS_EVERY = 0.2
KEEPALIVE = 15.0
QUEUE_LIMIT = 1000

LOG_ENTRY = obj({"time": NUMBER, "node": STRING, "event": STRING, "message": STRING,
                 "vs": STRING, "resource": STRING, "correlation": STRING,
                 "extra": ANY_OBJECT}, additional=True)


def _entries(kvs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for kv in kvs:
        with contextlib.suppress(ValueError, TypeError):
            out.append(asdict(eventlog.LogEntry.from_kv(kv)))
    return out


async def list_events(call: Call) -> Any:
    limit = call.query_int("limit", 100, 1, eventlog.MAX_ENTRIES)
    vs = call.query("vs")
    result = await call.ctx.store.range(keys.LOG)
    entries = _entries(list(result.kvs))
    if vs is not None:
        entries = [e for e in entries if e["vs"] == vs]
    return entries[-limit:]


async def _watch(store: Store, prefix: str, start: int) -> AsyncIterator[Any]:
    """A watch that starts again after a store error (from the revision reached)."""
    while True:
        try:
            async for ev in store.watch(prefix, start):
                start = ev.revision + 1
                yield ev
        except CoordError:
            await asyncio.sleep(0.5)


async def stream_events(call: Call) -> web.StreamResponse:
    request, ctx = call.request, call.ctx
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    store = ctx.store
    start = await store.revision() + 1
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
    changed = asyncio.Event()
    changed.set()

    def offer(kind: str, data: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a stalled reader loses events
            queue.put_nowait((kind, data))

    async def follow_log() -> None:
        async for ev in _watch(store, keys.LOG, start):
            if ev.value:
                for entry in _entries([ev]):
                    offer("log", entry)

    async def follow_cluster() -> None:
        async for _ in _watch(store, keys.PREFIX, start):
            changed.set()

    async def statuses() -> None:
        while True:
            await changed.wait()
            changed.clear()
            with contextlib.suppress(CoordError):
                offer("status", status_document(await intents.current_view(store)))
            await asyncio.sleep(STATUS_EVERY)

    async def samples() -> None:
        if ctx.history is None:
            return
        async for sample in ctx.history.follow():
            offer("metrics", sample)

    tasks = [asyncio.ensure_future(t()) for t in (follow_log, follow_cluster, statuses, samples)]
    try:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    kind, data = await queue.get()
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            text = json.dumps(data, separators=(",", ":"), default=str)
            await response.write(f"event: {kind}\ndata: {text}\n\n".encode())
    except ConnectionResetError:
        pass  # the client went away
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return response


ROUTES = [
    Route("GET", "/events", list_events, "The cluster event log, oldest first", "events",
          Role.VIEWER, response=array(LOG_ENTRY),
          query=(Param("limit", "how many of the latest entries (default 100)",
                       {"type": "integer", "minimum": 1}),
                 Param("vs", "only entries about this virtual server"))),
    Route("GET", "/events/stream", stream_events, "Server-sent events: status, log entries "
          "and performance samples as they happen", "events", Role.VIEWER,
          content_type="text/event-stream"),
]
