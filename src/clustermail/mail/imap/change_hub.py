"""Commit notifications from the mail store to the IMAP sessions that have a mailbox
selected (they then read the store's change log at their next command boundary, or at
once in IDLE)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store.loop_handoff import LoopHandoff

log = logging.getLogger(__name__)


class ChangeHub:
    """Fans the store's commit notifications out to the sessions that watch a mailbox.

    The store calls its listeners from its writer thread; the hub hops onto the
    event loop and calls each watcher of the touched mailboxes there.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dbs: dict[int, tuple[MailboxDatabase, Callable[[frozenset[str]], None]]] = {}
        self._watchers: dict[tuple[int, str], set[Callable[[], None]]] = {}

    def watch(
        self, db: MailboxDatabase, mailbox: str, callback: Callable[[], None]
    ) -> Callable[[], None]:
        key = (id(db), mailbox)
        if id(db) not in self._dbs:
            handoff = LoopHandoff.of(self._loop)

            def listener(touched: frozenset[str], dbid: int = id(db)) -> None:
                # Through the loop's handoff: the same wake-up as the batch's answers,
                # and after them (they were posted first).
                handoff.post(lambda: self._dispatch(dbid, touched))

            db.add_listener(listener)
            self._dbs[id(db)] = (db, listener)
        self._watchers.setdefault(key, set()).add(callback)

        def unwatch() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(callback)
                if not watchers:
                    del self._watchers[key]

        return unwatch

    def _dispatch(self, dbid: int, touched: frozenset[str]) -> None:
        for mailbox in touched:
            for callback in list(self._watchers.get((dbid, mailbox), ())):
                try:
                    callback()
                except Exception:
                    log.exception("change watcher failed")

    def close(self) -> None:
        for db, listener in self._dbs.values():
            with contextlib.suppress(ValueError):
                db.remove_listener(listener)
        self._dbs.clear()
        self._watchers.clear()
