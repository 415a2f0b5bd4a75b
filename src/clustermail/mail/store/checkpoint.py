"""Background WAL checkpoints. The writer's connection never checkpoints (autocheckpoint
off), so copying WAL frames into the database file and its fsync happen here, on another
connection, while the writer keeps committing (a PASSIVE checkpoint blocks neither the
writer nor readers). A commit therefore never waits for a checkpoint's write and fsync of
the database file; the bytes written are the same (large messages are still written twice)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

THRESHOLD_BYTES = 8 * 1024 * 1024  # checkpoint once the WAL holds this much


class Checkpointer:
    def __init__(self, connect: Callable[[], sqlite3.Connection], database: Path) -> None:
        self._connect = connect
        self._wal = database.with_name(database.name + "-wal")
        self._wanted = threading.Event()
        self._stop = False
        self.checkpoints = 0
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint:{database.name}", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        """Called by the writer after a commit: cheap (one stat)."""
        try:
            if self._wal.stat().st_size >= THRESHOLD_BYTES:
                self._wanted.set()
        except OSError:
            pass

    def close(self) -> None:
        self._stop = True
        self._wanted.set()
        self._thread.join()

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
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error:
                    log.exception("background checkpoint of %s failed", self._wal)
        finally:
            if conn is not None:
                conn.close()
