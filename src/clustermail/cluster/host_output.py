"""What a resource host writes: events for the agent on stdout, its log to the
process log (:mod:`clustermail.logutil`: JSON lines on stderr)."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

from clustermail.cluster.host_protocol import HostEvent, LogEvent, encode_event
from clustermail.logutil import level_number

_log = logging.getLogger("clustermail.host")

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
    """The process log for humans; warnings and errors also go to the agent."""

    def __init__(self, vs: str, node: str, sink: EventSink | None) -> None:
        self.vs, self.node, self.sink = vs, node, sink

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
        context: dict[str, object] = {"vs": self.vs, "node": self.node}
        if resource is not None:
            context["resource"] = resource
        if (current := transition.get()) is not None:
            context["transition"] = current
        _log.log(level_number(level), message, extra={"fields": {**context, **(fields or {})}})
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
