"""Background WAL checkpoints. The writer's connection never checkpoints on its own
(autocheckpoint off), so copying WAL frames into the database file and its fsync happen
here, on another connection, while the writer keeps committing (a PASSIVE checkpoint
blocks neither the writer nor readers). A commit therefore never waits for a checkpoint's
write and fsync of the database file; the bytes written are the same (large messages are
still written twice).

SQLite restarts the WAL from its start only at a write transaction that begins while
every frame is in the database file; under a steady stream of commits a checkpoint on
another connection never ends between two of them, and the WAL would grow without bound.
So once a background round is done, the writer copies the few frames committed meanwhile
itself, between two transactions (:meth:`Checkpointer.poke` says when), and the next
transaction restarts the WAL."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

THRESHOLD_BYTES = 8 * 1024 * 1024  # checkpoint once about this much was written to the WAL
#: Background checkpoints in a row at most: each round after the first copies only what
#: came during the one before; the writer's own short checkpoint does the rest.
CATCH_UP_ROUNDS = 3
#: The largest WAL file kept after a restart (SQLite's journal_size_limit): a WAL that grew
#: while a reader kept it from restarting is cut back.
WAL_SIZE_LIMIT = 8 * THRESHOLD_BYTES
#: What one commit is taken to add to the WAL besides its jobs' bytes: the pages of the
#: message, folder and index tables it touches (a few pages of 4 KiB).
COMMIT_OVERHEAD = 16 * 1024


class Checkpointer:
    def __init__(self, connect: Callable[[], sqlite3.Connection], database: Path) -> None:
        self._connect = connect
        self._wal = database.with_name(database.name + "-wal")
        self._wanted = threading.Event()
        self._finish = threading.Event()  # a background round ended: the writer may finish
        self._stop = False
        self.checkpoints = 0
        self._written = 0  # bytes written to the WAL since the last checkpoint was asked for
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint:{database.name}", daemon=True
        )
        self._thread.start()

    def poke(self, written: int = 0) -> bool:
        """Called by the writer thread after each commit with the bytes it wrote; True when
        the writer should now run a checkpoint of its own (after answering: see above).

        Written bytes are counted, not read from the WAL file's size: once the WAL has
        restarted SQLite reuses the file at the same size, and a size test then asked for
        a checkpoint (and its fsync of the database file) after every single commit.
        SQLite's own autocheckpoint counts the frames since the restart the same way."""
        self._written += written + COMMIT_OVERHEAD
        if self._written >= THRESHOLD_BYTES:
            self._written = 0
            self._wanted.set()
        if self._finish.is_set():
            self._finish.clear()
            return True
        return False

    def close(self) -> None:
        self._stop = True
        self._wanted.set()
        self._thread.join()

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Checkpoints until every frame is in the database file or CATCH_UP_ROUNDS, then
        lets the writer finish."""
        try:
            for _ in range(CATCH_UP_ROUNDS):
                _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
                if self._stop or frames <= 0 or copied >= frames:
                    return
        finally:
            self._finish.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stop:
                    return
                if conn is None:
                    conn = self._connect()
                try:
                    self._catch_up(conn)
                except sqlite3.Error:
                    log.exception("background checkpoint of %s failed", self._wal)
        finally:
            if conn is not None:
                conn.close()
