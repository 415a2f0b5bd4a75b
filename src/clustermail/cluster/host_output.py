"""What a resource host writes: events for the agent on stdout, JSON logs on stderr."""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from clustermail.cluster.host_protocol import HostEvent, LogEvent, encode_event

#: The id of the transition being carried out ("t7"), in every log line it causes.
transition: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "transition", default=None
)


class EventSink:
    """Writes events to stdout, one JSON line each. A closed stdout means the
    agent is gone: ``on_gone`` is called once and later events are dropped."""

    def __init__(self, out: TextIO, on_gone: Callable[[str], None]) -> None:
        self._out = out
        self._on_gone = on_gone
        self.gone = False

    def emit(self, event: HostEvent) -> None:
        if self.gone:
            return
        try:
            self._out.write(encode_event(event))
            self._out.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            self.gone = True
            self._on_gone(f"stdout closed ({type(exc).__name__})")


class HostLog:
    """JSON lines on stderr for humans; warnings and errors also go to the agent."""

    def __init__(self, vs: str, node: str, sink: EventSink | None, err: TextIO) -> None:
        self.vs, self.node, self.sink, self._err = vs, node, sink, err

    def write(
        self,
        level: str,
        message: str,
        resource: str | None,
        fields: Mapping[str, object] | None = None,
        *,
        to_agent: bool = True,
    ) -> None:
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        record: dict[str, object] = {
            "time": stamp,
            "level": level,
            "vs": self.vs,
            "node": self.node,
            "resource": resource,
            "transition": transition.get(),
            "message": message,
        }
        record.update(fields or {})
        with contextlib.suppress(OSError, ValueError):
            self._err.write(json.dumps(record, default=str) + "\n")
            self._err.flush()
        if to_agent and self.sink is not None and level in ("warning", "error"):
            self.sink.emit(LogEvent(level, message, now, resource))

    def bind(self, resource: str | None) -> BoundLog:
        return BoundLog(self, resource)


@dataclass(frozen=True, slots=True)
class BoundLog:
    """The :class:`~clustermail.cluster.resources.base.Logger` a resource gets."""

    host: HostLog
    resource: str | None

    def debug(self, message: str, **fields: object) -> None:
        self.host.write("debug", message, self.resource, fields)

    def info(self, message: str, **fields: object) -> None:
        self.host.write("info", message, self.resource, fields)

    def warning(self, message: str, **fields: object) -> None:
        self.host.write("warning", message, self.resource, fields)

    def error(self, message: str, **fields: object) -> None:
        self.host.write("error", message, self.resource, fields)
