"""The message tracking log: one JSON object per line on the virtual server's disk.

``<disk>/tracking/YYYY-MM-DD.jsonl`` (UTC days), so it moves with the virtual server and
old days can be deleted by age. Fields: ``time``, ``event`` (receive, deliver, queue,
relay, defer, bounce, fail, expire, delay, delete), ``vs``, ``queue_id``, ``message_id``,
``sender``, ``recipients``, ``size``, ``result`` (enhanced status code or "ok") and
``detail``. Lines are buffered for up to ``FLUSH_SECONDS`` inside an event loop (one
``write`` per batch instead of one per message) and appended with single ``write`` calls
on an ``O_APPEND`` file (whole lines even with several writers), never fsynced: tracking
is diagnostics, the queue and the databases are the record.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clustermail.private_files import append_private, make_private_dir

TRACKING_DIR = "tracking"
FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    time: float
    event: str
    vs: str
    queue_id: str | None
    message_id: str | None
    sender: str
    recipients: list[str]
    size: int
    result: str
    detail: str = ""
    client: str | None = None

    def to_json(self) -> str:
        # Not dataclasses.asdict: its deep copy showed in the SMTP profile. Every field,
        # so that one added later is written too; None ones are left out.
        fields = {name: getattr(self, name) for name in self.__slots__}
        return json.dumps({k: v for k, v in fields.items() if v is not None})


class TrackingLog:
    def __init__(self, disk: Path, vs: str) -> None:
        self.folder = disk / TRACKING_DIR
        self.vs = vs
        self._day = ""
        self._fd: int | None = None
        self._pending: list[str] = []
        self._pending_day = ""
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def record(
        self,
        event: str,
        *,
        queue_id: str | None = None,
        message_id: str | None,
        sender: str,
        recipients: Iterable[str],
        size: int,
        result: str,
        detail: str = "",
        client: str | None = None,
        now: float | None = None,
    ) -> None:
        ts = time.time() if now is None else now
        entry = TrackingEvent(
            round(ts, 3), event, self.vs, queue_id, message_id, sender, list(recipients),
            size, result, detail[:500], client,
        )
        line = entry.to_json() + "\n"
        day = _day(ts)
        if self._pending and day != self._pending_day:
            self.flush()
        self._pending.append(line)
        self._pending_day = day
        self._pending_bytes += len(line)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()  # no event loop (tools, tests): write now
                return
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._pending, self._pending_bytes = self._pending, [], 0
        if not lines:
            return
        try:
            fd = self._open(self._pending_day)
            os.write(fd, "".join(lines).encode())
        except OSError:
            pass  # a full or failing disk shows in the mail store first; never fail mail here

    def _open(self, day: str) -> int:
        if self._fd is None or day != self._day:
            self.close()
            make_private_dir(self.folder)
            self._fd = append_private(self.folder / f"{day}.jsonl")
            self._day = day
        return self._fd

    def close(self) -> None:
        self.flush()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _day(ts: float) -> str:
    """The UTC day of ``ts``; the last one is kept (every record asks, and it is
    formatted once a day instead of once a message)."""
    global _last_day
    number = int(ts // 86400)
    if _last_day[0] != number:
        _last_day = (number, datetime.fromtimestamp(number * 86400, UTC).strftime("%Y-%m-%d"))
    return _last_day[1]


_last_day: tuple[int, str] = (-1 << 62, "")


@dataclass(frozen=True, slots=True)
class Query:
    sender: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    since: float | None = None
    events: tuple[str, ...] = field(default_factory=tuple)

    def matches(self, entry: dict[str, object]) -> bool:
        if self.sender is not None and str(entry.get("sender", "")).lower() != self.sender.lower():
            return False
        if self.recipient is not None:
            rcpts = entry.get("recipients")
            wanted = self.recipient.lower()
            if not isinstance(rcpts, list) or wanted not in (str(r).lower() for r in rcpts):
                return False
        if self.message_id is not None:
            mid = str(entry.get("message_id") or "").strip("<>").lower()
            if mid != self.message_id.strip("<>").lower():
                return False
        if self.since is not None:
            t = entry.get("time")
            if not isinstance(t, int | float) or t < self.since:
                return False
        return not self.events or entry.get("event") in self.events


def log_files(disks: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for disk in disks:
        folder = disk / TRACKING_DIR
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.jsonl")))
    return files


def search(files: Iterable[Path], query: Query) -> Iterator[dict[str, object]]:
    """Matching entries of the given log files, in time order. Lines that are not JSON
    objects (a torn last line after a crash) are skipped."""
    found: list[dict[str, object]] = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and query.matches(entry):
                        found.append(entry)
        except OSError:
            continue
    found.sort(key=_time_of)
    return iter(found)


def _time_of(entry: dict[str, object]) -> float:
    t = entry.get("time")
    return float(t) if isinstance(t, int | float) else 0.0
