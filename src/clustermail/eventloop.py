"""The event loop of the processes that serve mail: uvloop, asyncio's own as a fallback.

The resource host runs every SMTP, IMAP4 and POP3 session of its virtual server on one
loop, so the loop's own cost per read and write is paid on every command. uvloop (libuv,
written in Cython) cut that cost enough to raise SMTP ingest by 40-50 % on the bench
(docs/decisions.md, "The resource host runs on uvloop"). ``CLUSTERMAIL_EVENT_LOOP=asyncio``
runs the standard loop instead, e.g. to rule the loop out while troubleshooting.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Environment variable choosing the loop: ``uvloop`` (default) or ``asyncio``.
ENV = "CLUSTERMAIL_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default (asked for, or not installed)."""
    choice = os.environ.get(ENV, "uvloop").strip().lower()
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        log.warning("%s=%r is neither 'uvloop' nor 'asyncio': running on uvloop", ENV, choice)
    try:
        import uvloop
    except ImportError:  # an install without it still runs, on the standard loop
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
