"""The cluster event log: every state change and decision, kept in the store.

What `clustermail log` shows, from any machine. Each entry is also a line of
the writing process's own log (:func:`note`, through :mod:`clustermail.logutil`),
written at once: the store write may lag behind or fail.

Bounded: the leader trims the oldest entries past ``MAX_ENTRIES`` and says so
in the log itself, so nothing disappears silently.

Reading never fails on an entry: one that is not a valid entry (written by a
broken or foreign tool) is read as a ``malformed_entry`` note in its place,
saying which key and what is wrong, so neither `clustermail log` nor the
leader trimming the log stops at it.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clustermail.cluster import keys
from clustermail.coord import Delete, KeyValue, Store
from clustermail.logutil import log_event

MAX_ENTRIES = 5000
_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class LogEntry:
    time: float
    node: str
    event: str
    message: str
    vs: str = ""
    resource: str = ""
    #: Ties together the entries of one transition (e.g. one failover).
    correlation: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @staticmethod
    def from_kv(kv: KeyValue) -> LogEntry:
        """The entry at ``kv``; a note in its place when it is malformed (never raises)."""
        return parse(kv.key, kv.value)


#: The event of the note that stands in for a malformed entry.
MALFORMED = "malformed_entry"


class _Malformed(ValueError):
    pass


def _text(data: dict[str, Any], name: str, required: bool = False) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise _Malformed(f"field {name!r}: expected a string, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _entry(value: bytes) -> LogEntry:
    try:
        data = json.loads(value)
    except ValueError as exc:  # also UnicodeDecodeError
        raise _Malformed(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _Malformed(f"expected a JSON object, got {_kind(data)}")
    when = data.get("time")
    if not isinstance(when, int | float) or isinstance(when, bool):
        raise _Malformed(f"field 'time': expected a number, got {_kind(when)}")
    extra = data.get("extra")
    if extra is None:
        extra = {}
    elif not isinstance(extra, dict):
        raise _Malformed(f"field 'extra': expected an object, got {_kind(extra)}")
    # Fields this version does not know are ignored: entries are never rewritten.
    return LogEntry(time=float(when), node=_text(data, "node", True),
                    event=_text(data, "event", True), message=_text(data, "message", True),
                    vs=_text(data, "vs"), resource=_text(data, "resource"),
                    correlation=_text(data, "correlation"), extra=extra)


def parse(key: str, value: bytes) -> LogEntry:
    """The entry stored at ``key``; when it is malformed, a :data:`MALFORMED` note
    in its place (time and node taken from the key) saying what is wrong."""
    try:
        return _entry(value)
    except _Malformed as exc:
        stamp, node = _from_key(key)
        return LogEntry(time=stamp, node=node, event=MALFORMED,
                        message=f"skipped a malformed log entry {key}: {exc}")


def _from_key(key: str) -> tuple[float, str]:
    """(time, node) from an :func:`entry_key`; (0, "") for parts that do not parse."""
    micros, _, rest = key[len(keys.LOG):].partition("-")
    node, _, _counter = rest.rpartition("-")
    return (int(micros) / 1e6 if micros.isdecimal() else 0.0), node


def entry_key(entry: LogEntry) -> str:
    # Time first so a range read is chronological; node and a counter keep keys unique.
    return f"{keys.LOG}{int(entry.time * 1e6):017d}-{entry.node}-{next(_counter):06d}"


async def append(store: Store, entry: LogEntry) -> None:
    await store.put(entry_key(entry), entry.to_json())


def make(node: str, event: str, message: str, **kw: Any) -> LogEntry:
    return LogEntry(time=time.time(), node=node, event=event, message=message, **kw)


def note(node: str, event: str, message: str, *, level: str = "info", **kw: Any) -> LogEntry:
    """A new entry, already written to this process's log (at ``level``: the cluster
    log has no levels); the caller appends it to the store (at once, or later from a
    queue: entries carry their own time)."""
    entry = make(node, event, message, **kw)
    log_event(event, message=message, level=level, node=node, vs=entry.vs,
              resource=entry.resource, correlation=entry.correlation,
              extra=entry.extra or None)
    return entry


async def read(store: Store, limit: int | None = None) -> list[LogEntry]:
    result = await store.range(keys.LOG)
    kvs = result.kvs if limit is None else result.kvs[-limit:]
    return [LogEntry.from_kv(kv) for kv in kvs]


async def trim(store: Store, node: str, max_entries: int = MAX_ENTRIES) -> int:
    """Deletes the oldest entries beyond ``max_entries``; logs how many went."""
    result = await store.range(keys.LOG)
    excess = len(result.kvs) - max_entries
    if excess <= 0:
        return 0
    doomed = result.kvs[: excess + 1]  # +1 leaves room for the trim notice itself
    for start in range(0, len(doomed), 100):
        await store.txn([], [Delete(kv.key) for kv in doomed[start : start + 100]])
    first = LogEntry.from_kv(doomed[0])
    last = LogEntry.from_kv(doomed[-1])
    await append(
        store,
        note(
            node,
            "log_trimmed",
            f"trimmed the {len(doomed)} oldest log entries "
            f"({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(first.time))} to "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last.time))}) "
            f"to keep the log at {max_entries} entries",
        ),
    )
    return len(doomed)
