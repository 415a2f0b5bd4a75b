"""Requests addressed to a node (not to a virtual server's owner): e.g. "validate".

Same protocol as every request (:mod:`.requests`): the asker writes a pending record
under ``NODE_REQUESTS/<node>/<id>``; the node agent of ``<node>`` claims it (compare-and-
swap on its revision), runs the handler registered for its ``op`` under a timeout, and
writes the result. The agent runs only what it was given handlers for: the cluster layer
knows no operation, the layer that starts the agent (the CLI's ``node run``) brings them.

The claim's wall-clock time (``started``) is written with the claim, so an asker that
watches the record can place the node's clock between its own send and the moment it saw
the claim (the clock skew `validate --cluster` reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clustermail.cluster import keys
from clustermail.cluster.requests import (
    DONE,
    FAILED,
    KEEP_FINISHED,
    PENDING,
    RUNNING,
    STATES,
    new_id,
    replace_if,
    who,
)
from clustermail.coord import Compare, CoordError, Delete, EventType, KeyValue, Store
from clustermail.logutil import log_event

#: The longest a handler may run, whatever the request asks.
MAX_HANDLER_TIMEOUT = 300.0
RETRY_DELAY = 1.0


class NodeRequestError(Exception):
    """A node request record that cannot be read."""


@dataclass(frozen=True, slots=True)
class NodeRequest:
    id: str
    node: str
    op: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    created: float = 0.0
    #: Past this time a pending request is never run (nobody waits for it any more).
    claim_by: float = 0.0
    #: How long the handler may run once claimed (capped by MAX_HANDLER_TIMEOUT).
    timeout: float = 60.0
    requested_by: str = ""
    state: str = PENDING
    #: The node's wall clock when it claimed the request.
    started: float | None = None
    result: Mapping[str, Any] | None = field(default=None, hash=False)
    error: str = ""
    finished: float | None = None

    @property
    def key(self) -> str:
        return request_key(self.node, self.id)

    @property
    def is_finished(self) -> bool:
        return self.state in (DONE, FAILED)

    def to_store(self) -> bytes:
        data: dict[str, Any] = {
            "id": self.id, "node": self.node, "op": self.op, "params": dict(self.params),
            "created": self.created, "claim_by": self.claim_by, "timeout": self.timeout,
            "requested_by": self.requested_by, "state": self.state, "started": self.started,
            "result": None if self.result is None else dict(self.result),
            "error": self.error, "finished": self.finished,
        }
        return json.dumps({k: v for k, v in data.items() if v is not None},
                          sort_keys=True).encode()

    @classmethod
    def from_store(cls, key: str, value: bytes) -> NodeRequest:
        try:
            data = json.loads(value)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            state = str(data.get("state", PENDING))
            if state not in STATES:
                raise ValueError(f"unknown state {state!r}")
            result = data.get("result")
            if result is not None and not isinstance(result, dict):
                raise ValueError("result is not an object")
            started, finished = data.get("started"), data.get("finished")
            return cls(
                id=str(data["id"]), node=str(data["node"]), op=str(data["op"]),
                params=dict(data.get("params") or {}),
                created=float(data.get("created", 0.0)),
                claim_by=float(data.get("claim_by", 0.0)),
                timeout=float(data.get("timeout", 60.0)),
                requested_by=str(data.get("requested_by", "")), state=state,
                started=None if started is None else float(started), result=result,
                error=str(data.get("error", "")),
                finished=None if finished is None else float(finished),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise NodeRequestError(f"{key}: not a node request ({exc})") from None


def prefix_of(node: str) -> str:
    return f"{keys.NODE_REQUESTS}{node}/"


def request_key(node: str, request_id: str) -> str:
    return f"{prefix_of(node)}{request_id}"


def new_request(node: str, op: str, params: Mapping[str, Any], *, claim_timeout: float,
                timeout: float, now: float | None = None) -> NodeRequest:
    now = time.time() if now is None else now
    return NodeRequest(id=new_id(now), node=node, op=op, params=dict(params), created=now,
                       claim_by=now + claim_timeout, timeout=timeout, requested_by=who())


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What a handler may use: the agent's store, its node name and data directory."""

    store: Store
    node: str
    data_dir: Path


#: A handler gets the request's params and returns its result (JSON-able); an exception
#: fails the request with its message.
Handler = Callable[[NodeContext, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


class NodeRequestWorker:
    """Follows ``NODE_REQUESTS/<node>/`` and runs the pending requests, one at a time."""

    def __init__(self, context: NodeContext, handlers: Mapping[str, Handler]) -> None:
        self.context = context
        self.store = context.store
        self.node = context.node
        self.handlers = dict(handlers)
        self._todo: asyncio.Queue[KeyValue] = asyncio.Queue()

    async def run(self) -> None:
        """Until cancelled."""
        runner = asyncio.create_task(self._runner(), name="node requests")
        try:
            await self._follow()
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _follow(self) -> None:
        prefix = prefix_of(self.node)
        first = True
        while True:
            try:
                found = await self.store.range(prefix)
                for kv in found.kvs:
                    await self._consider(kv, at_start=first)
                first = False
                async for ev in self.store.watch(prefix, found.revision + 1):
                    if ev.type is EventType.PUT:
                        await self._consider(KeyValue(ev.key, ev.value, ev.create_revision,
                                                      ev.revision, ev.version, ev.lease))
            except CoordError as exc:
                self._log("warning", f"following node requests failed, will retry: {exc}")
                await asyncio.sleep(RETRY_DELAY)

    async def _consider(self, kv: KeyValue, *, at_start: bool = False) -> None:
        try:
            request = NodeRequest.from_store(kv.key, kv.value)
        except NodeRequestError as exc:
            self._log("warning", f"ignored a node request: {exc}")
            return
        if request.state == PENDING:
            self._todo.put_nowait(kv)
        elif at_start and request.state == RUNNING:
            # An earlier run of this agent claimed it and died: say so, never run it twice.
            await replace_if(self.store, replace(
                request, state=FAILED, finished=time.time(),
                error=f"the node agent of {self.node} stopped while it ran this"), kv.mod_revision)
        elif at_start and request.is_finished and (request.finished or 0) < (
                time.time() - KEEP_FINISHED):
            await self.store.txn([Compare.mod_is(kv.key, kv.mod_revision)], [Delete(kv.key)])

    async def _runner(self) -> None:
        while True:
            kv = await self._todo.get()
            try:
                await self._handle(kv)
            except CoordError as exc:
                self._log("warning", f"node request {kv.key}: {exc}")
            except Exception as exc:  # one bad request never stops the agent's others
                self._log("error", f"node request {kv.key}: {exc!r}")

    async def _handle(self, kv: KeyValue) -> None:
        current = await self.store.get(kv.key)
        if current is None:
            return  # withdrawn
        request = NodeRequest.from_store(current.key, current.value)
        if request.state != PENDING:
            return
        now = time.time()
        if now > request.claim_by:
            await replace_if(self.store, replace(
                request, state=FAILED, finished=now,
                error="claimed too late: the asker had stopped waiting"), current.mod_revision)
            return
        claimed = replace(request, state=RUNNING, started=time.time())
        revision = await replace_if(self.store, claimed, current.mod_revision)
        if revision is None:
            return  # withdrawn or changed meanwhile
        final = await self._run(claimed)
        if await replace_if(self.store, final, revision) is None:
            self._log("warning", f"node request {request.id}: its record changed meanwhile; "
                      f"result not written ({final.state})")

    async def _run(self, request: NodeRequest) -> NodeRequest:
        handler = self.handlers.get(request.op)
        if handler is None:
            return replace(request, state=FAILED, finished=time.time(),
                           error=f"node {self.node} does not know the request {request.op!r} "
                           "(an older version?)")
        timeout = max(0.1, min(request.timeout, MAX_HANDLER_TIMEOUT))
        try:
            async with asyncio.timeout(timeout):
                result = await handler(self.context, request.params)
            return replace(request, state=DONE, result=dict(result), finished=time.time())
        except TimeoutError:
            error = f"{request.op} did not finish in {timeout:g} s on {self.node}"
        except Exception as exc:  # a failed request, never a crash of the agent
            error = f"{request.op} failed on {self.node}: {exc or repr(exc)}"
        self._log("warning", f"node request {request.id}: {error}")
        return replace(request, state=FAILED, error=error, finished=time.time())

    def _log(self, level: str, message: str) -> None:
        log_event("node_request", node=self.node, level=level, message=message)


__all__ = [
    "MAX_HANDLER_TIMEOUT", "Handler", "NodeContext", "NodeRequest", "NodeRequestError",
    "NodeRequestWorker", "new_request", "prefix_of", "request_key",
]
