"""`clustermail validate --cluster`: every running node validates itself, at once.

The CLI checks the store from where it runs, then writes a ``validate`` node request
(:mod:`clustermail.cluster.node_requests`) for every node that holds a lease, and follows
them for at most ``timeout`` seconds. Each node agent claims its request (writing its
wall clock), runs the checks and trials of :mod:`.validate_node` and answers. The CLI
computes the clock skew between nodes from the claims (:mod:`.validate_report`), and a node
that does not answer in time is a failure line, never a hang. Requests left unanswered
are withdrawn and answered ones deleted, so nothing runs later by surprise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from clustermail.admin.validate_report import (
    FAIL,
    OP,
    PASS,
    WARN,
    Check,
    ClockSample,
    ClusterReport,
    NodeReport,
    node_report,
    with_clocks,
)
from clustermail.admin.validate_store import STORE_TIMEOUT, latency
from clustermail.cluster import keys
from clustermail.cluster.node_requests import NodeRequest, NodeRequestError, new_request
from clustermail.cluster.requests import DONE, PENDING, RUNNING, put_new, withdraw
from clustermail.cluster.view import read_view
from clustermail.coord import CoordError, EventType, Store, open_store

DEFAULT_TIMEOUT = 10.0
#: What the asker keeps of the timeout for the node's answer to reach it (at most a
#: quarter): a node that overruns says so itself, in time.
NODE_MARGIN = 1.0


@dataclass
class _Tracked:
    request: NodeRequest
    sent: float  # wall clock, this machine
    sent_mono: float
    revision: int = 0
    claim_seen: float | None = None
    finished_mono: float | None = None
    final: NodeRequest | None = None
    others: list[str] = field(default_factory=list)


async def validate_cluster(store_url: str, timeout: float = DEFAULT_TIMEOUT) -> ClusterReport:
    started = time.monotonic()
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            store = await open_store(store_url)
    except (CoordError, TimeoutError) as exc:
        return ClusterReport((Check("store", FAIL,
                                    f"cannot reach {store_url}: {exc or 'timed out'}"),))
    checks = [Check("store", PASS, f"reached in {time.monotonic() - started:.3f} s")]
    try:
        return await _validate(store, timeout, checks)
    except (CoordError, TimeoutError) as exc:
        checks.append(Check("store", FAIL, f"the store failed: {exc or 'timed out'}"))
        return ClusterReport(tuple(checks))
    finally:
        with contextlib.suppress(CoordError, TimeoutError):
            async with asyncio.timeout(STORE_TIMEOUT):
                await store.close()


async def _validate(store: Store, timeout: float, checks: list[Check]) -> ClusterReport:
    here = await latency(store)
    checks.append(Check("store latency (here)", here.result, here.detail))
    async with asyncio.timeout(STORE_TIMEOUT):
        view = await read_view(store)
    config = view.cluster_config
    if config is None:
        error = view.config_error or "no configuration is applied (clustermail config apply)"
        checks.append(Check("configuration", FAIL, str(error)))
        return ClusterReport(tuple(checks))
    checks.append(Check("configuration", PASS, f"{len(config.node_names)} nodes, "
                        f"{len(config.virtual_servers)} virtual servers"))
    live = [n for n in config.node_names if n in view.nodes]
    down = [n for n in config.node_names if n not in view.nodes]
    if not live:
        checks.append(Check("nodes", FAIL, "no node is running: nothing to validate"))
    tracked = await _ask(store, live, timeout)
    reports, samples = [], []
    for node in live:
        t = tracked[node]
        report, sample = _report(node, t, timeout)
        reports.append(report)
        if sample is not None:
            samples.append(sample)
    await _tidy(store, tracked.values())
    with_clock, spread = with_clocks(reports, samples)
    if spread is not None:
        checks.append(spread)
    for node in down:
        with_clock.append(NodeReport(node, False, (Check(
            "answer", WARN, "not running (it holds no lease): not validated"),)))
    return ClusterReport(tuple(checks), tuple(with_clock))


async def _ask(store: Store, nodes: list[str], timeout: float) -> dict[str, _Tracked]:
    """Writes one request per node and follows them until all finish or time is up."""
    start = await store.revision()
    tracked: dict[str, _Tracked] = {}
    for node in nodes:
        request = new_request(node, OP, {}, claim_timeout=timeout,
                              timeout=max(0.1, timeout - min(NODE_MARGIN, timeout / 4)))
        tracked[node] = _Tracked(request, time.time(), time.monotonic())
        revision = await put_new(store, request)
        if revision is None:
            tracked[node].others.append("its request id was taken")
            tracked[node].finished_mono = time.monotonic()
            continue
        tracked[node].revision = revision
    by_key = {t.request.key: t for t in tracked.values() if t.revision}
    waiting = set(by_key)
    if not waiting:
        return tracked
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            async for ev in store.watch(keys.NODE_REQUESTS, start + 1):
                t = by_key.get(ev.key)
                if t is None or ev.type is not EventType.PUT:
                    continue
                try:
                    request = NodeRequest.from_store(ev.key, ev.value)
                except NodeRequestError as exc:
                    t.others.append(str(exc))
                    continue
                t.revision = ev.revision
                if request.state == RUNNING and t.claim_seen is None:
                    t.claim_seen = time.time()
                    t.request = request
                elif request.is_finished:
                    if t.claim_seen is None:
                        t.claim_seen = time.time()
                    t.final, t.finished_mono = request, time.monotonic()
                    waiting.discard(ev.key)
                    if not waiting:
                        break
    return tracked


def _report(node: str, t: _Tracked, timeout: float) -> tuple[NodeReport, ClockSample | None]:
    final = t.final
    if final is None:
        if t.others:
            return node_report(node, None, error="; ".join(t.others)), None
        what = ("claimed the request but did not finish" if t.request.state == RUNNING
                else "did not answer")
        return node_report(node, None, error=f"{node} {what} in {timeout:g} s"), None
    round_trip = None if t.finished_mono is None else t.finished_mono - t.sent_mono
    sample = None
    if final.started is not None and t.claim_seen is not None:
        sample = ClockSample(node, t.sent, t.claim_seen, final.started)
    if final.state != DONE or final.result is None:
        return node_report(node, None, error=final.error or "failed without a word",
                           round_trip=round_trip), sample
    return node_report(node, final.result, sample=sample, round_trip=round_trip), sample


async def _tidy(store: Store, tracked: Iterable[_Tracked]) -> None:
    """Withdraws what is still pending, deletes what was answered: a late node finds
    nothing to run, and answered requests do not pile up in the store."""
    for t in tracked:
        if not t.revision:
            continue
        with contextlib.suppress(CoordError):
            if t.final is not None or t.request.state == PENDING:
                await withdraw(store, t.final or t.request, t.revision)


__all__ = ["DEFAULT_TIMEOUT", "validate_cluster"]
