"""Hand results from the writer thread to an event loop, one wake-up per burst.

``asyncio.wrap_future`` wakes the loop once per resolved future (a write to its self-pipe
each time). The group-commit writer resolves a whole batch at once and posts its answers
here (``GroupCommitWriter.submit_async``), so one wake-up carries every result of the
batch: callbacks posted while a drain is already scheduled just join it. Callbacks run on
the loop in the order they were posted, so a batch's answers still come before the commit
notification posted after them (see ``ChangeHub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable

_HANDOFFS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopHandoff] = (
    weakref.WeakKeyDictionary()
)
_HANDOFFS_LOCK = threading.Lock()


class LoopHandoff:
    """Runs callbacks posted from any thread on one loop, in posting order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[Callable[[], None]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopHandoff:
        """The loop's handoff (one per loop, so that all its posts share the wake-ups)."""
        handoff = _HANDOFFS.get(loop)
        if handoff is None:
            with _HANDOFFS_LOCK:
                handoff = _HANDOFFS.get(loop)
                if handoff is None:
                    handoff = _HANDOFFS[loop] = cls(loop)
        return handoff

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop soon; silently dropped once the loop is closed."""
        with self._lock:
            self._pending.append(callback)
            if len(self._pending) > 1:
                return  # a drain is scheduled and has not started: it takes this one too
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            callbacks, self._pending = self._pending, []
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # one failing callback must not lose the others
                self._loop.call_exception_handler(
                    {"message": "loop handoff callback failed", "exception": exc}
                )
