"""A short in-process performance history, so the console charts work with no
Prometheus server: every ``interval`` seconds the admin service reads the cluster
view and scrapes each up node's ``/metrics`` (the same series Prometheus gets),
and keeps the last ``keep`` samples.

A sample: ``time``; ``online`` and ``total`` virtual servers; ``owners`` (vs →
node); ``messages_per_s`` (received), ``sessions`` (open SMTP/IMAP4/POP3
sessions), ``commands_per_s``, ``latency_ms`` (mean command latency over the
interval), ``queue_length``; and ``failovers``, the moves seen since the last
sample (``vs``, ``from``, ``to``, ``seconds`` not online).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from clustermail.admin.api.service_metrics import FAILOVER_SECONDS, FAILOVERS
from clustermail.admin.status import build_status
from clustermail.cluster.view import read_view
from clustermail.coord import CoordError, Store

INTERVAL = 2.0
KEEP = 300
SCRAPE_TIMEOUT = 1.5

#: Counters summed over every node and virtual server (name without _total).
_COUNTERS = {
    "messages": "clustermail_messages_received",
    "commands": "clustermail_commands",
    "latency_sum": "clustermail_command_seconds_sum",
    "latency_count": "clustermail_command_seconds_count",
}
_GAUGES = {"sessions": "clustermail_sessions_active", "queue": "clustermail_queue_messages"}


def sum_series(text: str) -> dict[str, float]:
    """The totals this history charts, from one Prometheus exposition."""
    out = dict.fromkeys([*_COUNTERS, *_GAUGES], 0.0)
    wanted = {v: k for k, v in {**_COUNTERS, **_GAUGES}.items()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            key = wanted.get(name)
            if key is not None:
                out[key] += sample.value
    return out


@dataclass
class _Seen:
    owner: str | None
    online: bool
    since: float  # when it was last seen online on ``owner``


@dataclass
class History:
    store: Store
    interval: float = INTERVAL
    keep: int = KEEP
    samples: deque[dict[str, Any]] = field(default_factory=deque)
    #: For tests: where to get a node's exposition (default: HTTP GET of its URL).
    scrape: Callable[[str], Any] | None = None
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _totals: dict[str, float] = field(default_factory=dict)
    _last_time: float = 0.0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def snapshot(self) -> dict[str, Any]:
        return {"interval": self.interval, "samples": list(self.samples)}

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Each new sample as it is taken."""
        last = self.samples[-1]["time"] if self.samples else 0.0

        def newer(since: float) -> Callable[[], bool]:
            return lambda: bool(self.samples) and self.samples[-1]["time"] > since

        while True:
            async with self._changed:
                await self._changed.wait_for(newer(last))
            fresh = [s for s in self.samples if s["time"] > last]
            for sample in fresh:
                yield sample
            last = fresh[-1]["time"]

    async def run(self) -> None:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)) as session:
            while True:
                started = time.monotonic()
                with contextlib.suppress(CoordError):
                    await self.take(session)
                await asyncio.sleep(max(0.1, self.interval - (time.monotonic() - started)))

    async def _scrape(self, session: aiohttp.ClientSession, url: str) -> str | None:
        if self.scrape is not None:
            result: str | None = await self.scrape(url)
            return result
        try:
            async with session.get(url) as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def take(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        now = time.time()
        view = await read_view(self.store)
        status = build_status(view)
        urls = [n["metrics_url"] for n in status["nodes"]
                if n.get("metrics_url") and n["state"] != "down"]
        texts = await asyncio.gather(*(self._scrape(session, u) for u in urls))
        totals = dict.fromkeys([*_COUNTERS, *_GAUGES], 0.0)
        for text in texts:
            if text:
                for key, value in sum_series(text).items():
                    totals[key] += value
        sample = self._sample(now, status["virtual_servers"], totals)
        self.samples.append(sample)
        while len(self.samples) > self.keep:
            self.samples.popleft()
        async with self._changed:
            self._changed.notify_all()
        return sample

    def _rate(self, totals: Mapping[str, float], key: str, dt: float) -> float:
        before = self._totals.get(key)
        if before is None or dt <= 0:
            return 0.0
        return max(0.0, totals[key] - before) / dt  # a restarted host resets its counters

    def _sample(self, now: float, servers: list[dict[str, Any]],
                totals: dict[str, float]) -> dict[str, Any]:
        dt = now - self._last_time if self._last_time else 0.0
        commands = totals["latency_count"] - self._totals.get("latency_count", 0.0)
        seconds = totals["latency_sum"] - self._totals.get("latency_sum", 0.0)
        sample: dict[str, Any] = {
            "time": round(now, 3),
            "online": sum(1 for v in servers if v["state"] == "online"),
            "total": len(servers),
            "owners": {v["name"]: v["owner"] for v in servers},
            "states": {v["name"]: v["state"] for v in servers},
            "messages_per_s": round(self._rate(totals, "messages", dt), 3),
            "commands_per_s": round(self._rate(totals, "commands", dt), 3),
            "latency_ms": round(seconds / commands * 1000, 3)
            if self._totals and commands > 0 and seconds >= 0 else None,
            "sessions": totals["sessions"],
            "queue_length": totals["queue"],
            "failovers": self._failovers(now, servers),
        }
        self._totals, self._last_time = totals, now
        return sample

    def _failovers(self, now: float, servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        moves = []
        for vs in servers:
            name, online = vs["name"], vs["state"] == "online"
            seen = self._seen.get(name)
            if seen is None:
                self._seen[name] = _Seen(vs["owner"], online, now)
                continue
            if online and vs["owner"] and seen.owner and vs["owner"] != seen.owner:
                seconds = round(now - seen.since, 3)
                moves.append({"vs": name, "from": seen.owner, "to": vs["owner"],
                              "seconds": seconds})
                FAILOVERS.labels(name).inc()
                FAILOVER_SECONDS.labels(name).observe(seconds)
            if online:
                self._seen[name] = _Seen(vs["owner"], True, now)
            elif seen.online:
                seen.online = False  # keeps ``since``: the last moment it was seen online
        return moves
