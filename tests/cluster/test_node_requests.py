"""Node requests against a real SQLite store: a worker (as a node agent runs it) claims
what is addressed to its node, runs it once under a timeout, and answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import node_requests as nr
from clustermail.cluster.requests import DONE, FAILED, PENDING, RUNNING, put_new, withdraw
from clustermail.coord import EventType, Store, open_store

RAN: list[str] = []


async def echo(ctx: nr.NodeContext, params: Mapping[str, Any]) -> Mapping[str, Any]:
    RAN.append(ctx.node)
    return {"node": ctx.node, "params": dict(params)}


async def hang(ctx: nr.NodeContext, params: Mapping[str, Any]) -> Mapping[str, Any]:
    await asyncio.Event().wait()
    return {}


async def boom(ctx: nr.NodeContext, params: Mapping[str, Any]) -> Mapping[str, Any]:
    raise ValueError("the disk is on fire")


HANDLERS: dict[str, nr.Handler] = {"echo": echo, "hang": hang, "boom": boom}


@contextlib.asynccontextmanager
async def worker(store: Store, node: str, tmp_path: Path) -> AsyncIterator[None]:
    task = asyncio.create_task(nr.NodeRequestWorker(
        nr.NodeContext(store, node, tmp_path), HANDLERS).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def finished(store: Store, request: nr.NodeRequest, start: int) -> nr.NodeRequest:
    async with asyncio.timeout(10):
        async for ev in store.watch(request.key, start + 1):
            if ev.type is EventType.PUT:
                got = nr.NodeRequest.from_store(ev.key, ev.value)
                if got.is_finished:
                    return got
    raise AssertionError("unreachable")


async def ask(store: Store, node: str, op: str, *, timeout: float = 5.0) -> nr.NodeRequest:
    request = nr.new_request(node, op, {"x": 1}, claim_timeout=5.0, timeout=timeout)
    start = await store.revision()
    assert await put_new(store, request) is not None
    return await finished(store, request, start)


async def test_a_node_runs_what_is_addressed_to_it_once(tmp_path: Path) -> None:
    RAN.clear()
    async with await open_store(f"sqlite://{tmp_path}/c.db") as store:
        async with worker(store, "n1", tmp_path), worker(store, "n2", tmp_path):
            done = await ask(store, "n2", "echo")
            assert done.state == DONE and done.result == {"node": "n2", "params": {"x": 1}}
            assert done.started is not None and done.finished is not None
            assert abs(done.started - time.time()) < 5
            failed = await ask(store, "n1", "boom")
            assert failed.state == FAILED and "the disk is on fire" in failed.error
            unknown = await ask(store, "n1", "defrag")
            assert unknown.state == FAILED and "does not know the request 'defrag'" in unknown.error
            slow = await ask(store, "n1", "hang", timeout=0.2)
            assert slow.state == FAILED and "did not finish in 0.2 s" in slow.error
            # The worker goes on after all that.
            assert (await ask(store, "n1", "echo")).state == DONE
        assert RAN == ["n2", "n1"]


async def test_late_withdrawn_and_interrupted_requests_never_run(tmp_path: Path) -> None:
    RAN.clear()
    async with await open_store(f"sqlite://{tmp_path}/c.db") as store:
        late = nr.new_request("n1", "echo", {}, claim_timeout=5.0, timeout=1.0,
                              now=time.time() - 60)
        gone = nr.new_request("n1", "echo", {}, claim_timeout=60.0, timeout=1.0)
        cut = replace(nr.new_request("n1", "echo", {}, claim_timeout=60.0, timeout=1.0),
                      state=RUNNING, started=time.time())
        for r in (late, gone, cut):
            assert await put_new(store, r) is not None
        kv = await store.get(gone.key)
        assert kv is not None and await withdraw(store, gone, kv.mod_revision)
        async with worker(store, "n1", tmp_path):
            got_late = await finished(store, late, 0)
            got_cut = await finished(store, cut, 0)
            # A request made now still runs: the worker is alive.
            assert (await ask(store, "n1", "echo")).state == DONE
        assert got_late.state == FAILED and "too late" in got_late.error
        assert got_cut.state == FAILED and "stopped while it ran" in got_cut.error
        assert await store.get(gone.key) is None
        assert RAN == ["n1"]


@pytest.mark.parametrize("value", [b"", b"[]", b'{"id": "x"}', b'{"id": "x", "node": "n",'
                                   b' "op": "o", "state": "lost"}'])
def test_a_bad_record_is_a_clear_error(value: bytes) -> None:
    with pytest.raises(nr.NodeRequestError, match="not a node request"):
        nr.NodeRequest.from_store("/k", value)


def test_a_record_survives_the_round_trip() -> None:
    r = replace(nr.new_request("n1", "validate", {"a": [1]}, claim_timeout=3, timeout=2),
                state=DONE, result={"checks": []}, started=5.0, finished=6.0)
    assert nr.NodeRequest.from_store(r.key, r.to_store()) == r
    assert r.key.startswith("/clustermail-node-requests/n1/")
    assert nr.NodeRequest.from_store(r.key, replace(r, state=PENDING).to_store()).state == PENDING
