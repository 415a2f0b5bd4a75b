"""A thread's read connection to a mailbox database, kept in one read transaction from
one commit to the next.

In WAL mode every read transaction takes and drops a read lock on the ``-shm`` file (two
``fcntl`` calls) and checks the WAL index header; a statement outside a transaction is a
transaction of its own and pays that each time. The database's only writer while it is
mounted is its own group-commit writer, so a snapshot stays current until that writer
commits: the writer calls :meth:`HeldReader.release` on every reader after each COMMIT
(before anyone is answered or told) and before each write begins, and a reader between
two commits reads with no lock calls at all (POP3 RETR and IMAP BODY[] read one message
per command; measured in docs/performance-mail.md).

Why also before each write: a reader whose snapshot began before the WAL was fully
checkpointed holds a WAL read mark, which stops the next write from restarting the WAL
at its start; released then, the WAL restarts as it did with per-statement reads.

The reader thread and the writer thread meet only through :attr:`HeldReader.lock`: the
writer does not wait for it around commits (a reader inside a long scan would stall
every commit) — if a read is under way it marks the reader stale, and the reader ends
its transaction when the outermost read finishes, or at the start of the next one. A
read under way can last much longer than its statements (a thread waiting for the
interpreter lock holds its snapshot meanwhile), and a snapshot older than the last
commit stops a checkpoint short; so around the writer's own checkpoint, which lets the
next write restart the WAL and runs at most once per few megabytes written, the writer
waits a few milliseconds for reads under way to end.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from types import TracebackType


class HeldReader:
    """One thread's connection; :meth:`enter`/:meth:`exit` (or ``with``) bracket each read
    (nested reads share the outer one's snapshot), :meth:`release` may be called from
    any thread. ``with`` raises what ``wrap`` makes of an SQLite error (the store's own
    errors, naming the file)."""

    __slots__ = ("conn", "depth", "lock", "stale", "wrap")

    def __init__(self, conn: sqlite3.Connection,
                 wrap: Callable[[sqlite3.Error], Exception] = lambda exc: exc) -> None:
        self.conn = conn
        self.wrap = wrap
        self.lock = threading.RLock()
        #: a commit happened while a read was under way: end the transaction after it
        self.stale = False
        self.depth = 0  # reads under way in the owning thread (nested calls)

    def enter(self) -> sqlite3.Connection:
        """Starts a read: the held snapshot when no commit happened since it began, else a
        new one (taken by the first statement, as BEGIN is deferred)."""
        self.lock.acquire()
        try:
            if self.depth == 0:
                conn = self.conn
                if self.stale:
                    self.stale = False
                    if conn.in_transaction:
                        conn.execute("COMMIT")
                if not conn.in_transaction:
                    conn.execute("BEGIN")
        except BaseException:
            self.lock.release()
            raise
        self.depth += 1
        return self.conn

    def exit(self, failed: bool = False) -> None:
        """Ends a read; the outermost one ends the transaction when a commit came meanwhile
        or the read failed (a snapshot an error interrupted is not kept)."""
        try:
            self.depth -= 1
            if self.depth == 0 and (self.stale or failed):
                self.stale = False
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK" if failed else "COMMIT")
        except sqlite3.Error:
            self.stale = True  # the read itself succeeded: the next enter tries again
        finally:
            self.lock.release()

    def __enter__(self) -> sqlite3.Connection:
        try:
            return self.enter()
        except sqlite3.Error as exc:
            raise self.wrap(exc) from None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # A class, not a generator-based context manager: ~1 µs less per read.
        failed = isinstance(exc, sqlite3.Error)
        self.exit(failed)
        if failed:
            assert isinstance(exc, sqlite3.Error)
            raise self.wrap(exc) from None

    def release(self, wait: float = 0.0) -> None:
        """Ends the held snapshot (the writer, after a commit and before a write), or,
        with a read under way, marks it stale for the reader to end. Waits at most
        ``wait`` seconds for a read under way to end (by default not at all)."""
        if not (self.lock.acquire(timeout=wait) if wait > 0 else self.lock.acquire(False)):
            self.stale = True
            return
        try:
            if self.depth:  # the writer's own thread, inside a read: leave it to exit
                self.stale = True
            elif self.conn.in_transaction:
                self.stale = False
                self.conn.execute("COMMIT")
        except sqlite3.Error:
            self.stale = True  # the reader's next enter tries again
        finally:
            self.lock.release()

    def close(self) -> None:
        self.conn.close()
