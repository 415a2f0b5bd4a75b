"""The process log: stdlib :mod:`logging`, one JSON object per line on stderr.

Every process entry point (the `clustermail` CLI, which runs the node agent, and
the resource host) calls :func:`setup` once; everything else only logs, through
``logging.getLogger(__name__)``, :func:`log_event` (a named event with fields),
or a resource's ``ctx.log`` (the resource host routes it here). A line looks like::

    {"time": "2026-05-01T12:00:00.123+00:00", "level": "info", "logger": "clustermail",
     "event": "cycle", "message": "…", "node": "node1", "vs": "mail1"}

What the cluster decides (placement, failovers, resources failing) also goes to
the event log in the store (:mod:`clustermail.cluster.eventlog`), which writes
each of its entries here as well.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

#: The logger of events that name no module of their own.
EVENTS = "clustermail"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, event, message, then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        if event:
            line["event"] = event
        line["message"] = record.getMessage()
        fields: Mapping[str, object] = getattr(record, "fields", None) or {}
        for key, value in fields.items():
            line.setdefault(key, value)  # a field never hides the time, level or message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _Handler(logging.Handler):
    """Writes to ``stream``, or to whatever ``sys.stderr`` is at the time."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            out = self._stream if self._stream is not None else sys.stderr
            out.write(self.format(record) + "\n")
            out.flush()
        except Exception:
            pass  # a closed stderr must never take a node agent or a resource host down


def setup(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Sends this process's log records to ``stream`` (stderr) as JSON lines.

    Idempotent: a second call replaces the handler the first one installed."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def level_number(level: str) -> int:
    """``"warning"`` → ``logging.WARNING``; an unknown name counts as info."""
    return _LEVELS.get(level, logging.INFO)


def log_event(event: str, *, message: str, level: str = "info", logger: str = EVENTS,
              **fields: Any) -> None:
    """Logs a named event; empty fields (None, "") are left out of the line."""
    logging.getLogger(logger).log(
        level_number(level), message,
        extra={"event": event,
               "fields": {k: v for k, v in fields.items() if v not in (None, "")}},
    )
