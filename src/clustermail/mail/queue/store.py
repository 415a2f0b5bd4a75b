"""The queue file: ``<disk>/queue/queue.sqlite`` (SQLite, WAL, ``synchronous = FULL``).

A message is stored once with its pending recipients; a recipient row is removed when it
is delivered or has failed for good, and the message with its last recipient. Writes of
the SMTP server and the queue runner go through the same group-commit writer as the
mailbox databases (one fsync per batch), and the same fencing: the file records the epoch
of the owner that opened it, and every write transaction first checks it, so a deposed
owner cannot write after the new one has opened the queue.

The admin CLI opens the file directly (``list``, ``retry``, ``delete``): SQLite's own
locking serialises it with the running server; the runner re-reads the queue at least
every few seconds, so a retry takes effect promptly.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from clustermail.mail.queue.finished import Finished, FinishedLog
from clustermail.mail.store.errors import StoreError
from clustermail.mail.store.writer import GroupCommitWriter, Tx
from clustermail.private_files import create_private_file, make_private_dir

T = TypeVar("T")
QUEUE_DIR = "queue"
QUEUE_FILE = "queue.sqlite"
BUSY_TIMEOUT_S = 10.0

#: Routes: deliver on this virtual server; relay to another one; send to the smart host.
LOCAL = "local"
EXTERNAL = "external"
VS_PREFIX = "vs:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mount (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    mounted_at REAL NOT NULL,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY,
    queue_id TEXT NOT NULL UNIQUE,
    message_id TEXT,
    sender TEXT NOT NULL,
    size INTEGER NOT NULL,
    arrived REAL NOT NULL,
    is_dsn INTEGER NOT NULL DEFAULT 0,
    delay_notified INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS recipient (
    id INTEGER PRIMARY KEY,
    message INTEGER NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    route TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS recipient_due ON recipient (next_attempt);
CREATE INDEX IF NOT EXISTS recipient_message ON recipient (message);
"""


class QueueError(StoreError):
    """The queue file cannot be opened or written."""


class QueueFencedError(QueueError):
    """A newer owner of the virtual server has opened the queue."""


def vs_route(name: str) -> str:
    return f"{VS_PREFIX}{name}"


def queue_path(disk: Path) -> Path:
    return disk / QUEUE_DIR / QUEUE_FILE


def new_queue_id() -> str:
    """16 hex digits, 64 random bits. Not uuid4: its ``os.urandom`` is a system call that
    drops the GIL once per SMTP transaction (the envelope gets its id when it is created);
    the ``random`` module's generator is seeded from the system's and reseeded in a forked
    child, and the id only has to be unlikely to repeat, not secret."""
    return f"{random.getrandbits(64):016X}"


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    if not create and not path.exists():
        raise QueueError(f"no queue at {path}")
    try:
        if create:
            make_private_dir(path.parent)
            create_private_file(path)  # all queued mail: 0600, and so its -wal and -shm
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SCHEMA)
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise QueueError(f"cannot open the queue {path}: {exc}") from None


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class NewRecipient:
    address: str
    route: str


@dataclass(frozen=True, slots=True)
class NewMessage:
    sender: str
    recipients: tuple[NewRecipient, ...]
    body: bytes
    message_id: str | None = None
    is_dsn: bool = False
    queue_id: str = field(default_factory=new_queue_id)


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    id: int
    address: str
    route: str
    attempts: int
    next_attempt: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    queue_id: str
    message_id: str | None
    sender: str
    size: int
    arrived: float
    is_dsn: bool
    delay_notified: bool
    recipients: tuple[QueuedRecipient, ...]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one recipient in one attempt."""

    recipient_id: int
    done: bool  # delivered or failed for good: the row goes
    next_attempt: float = 0.0  # when deferred
    error: str | None = None


# --------------------------------------------------------------------------- SQL (any thread)


def insert(conn: sqlite3.Connection, msg: NewMessage, now: float) -> int:
    cur = conn.execute(
        "INSERT INTO message (queue_id, message_id, sender, size, arrived, is_dsn, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (msg.queue_id, msg.message_id, msg.sender, len(msg.body), now, int(msg.is_dsn), msg.body),
    )
    mid = cur.lastrowid
    assert mid is not None
    conn.executemany(
        "INSERT INTO recipient (message, address, route, next_attempt) VALUES (?, ?, ?, ?)",
        [(mid, r.address, r.route, now) for r in msg.recipients],
    )
    return mid


def apply_outcomes(conn: sqlite3.Connection, outcomes: Iterable[Outcome]) -> list[Finished]:
    """Applies the outcomes; returns the recipients finished (queue id, address, route)."""
    touched: set[int] = set()
    finished: list[Finished] = []
    for o in outcomes:
        row = conn.execute(
            "SELECT r.message, m.queue_id, r.address, r.route FROM recipient r "
            "JOIN message m ON m.id = r.message WHERE r.id = ?", (o.recipient_id,))
        found = row.fetchone()
        if found is None:
            continue  # deleted by an administrator meanwhile
        touched.add(found[0])
        if o.done:
            finished.append((found[1], found[2], found[3]))
            conn.execute("DELETE FROM recipient WHERE id = ?", (o.recipient_id,))
        else:
            conn.execute(
                "UPDATE recipient SET attempts = attempts + 1, next_attempt = ?, last_error = ? "
                "WHERE id = ?",
                (o.next_attempt, o.error, o.recipient_id),
            )
    drop_empty(conn, touched)
    return finished


def drop_empty(conn: sqlite3.Connection, message_ids: Iterable[int] | None = None) -> int:
    if message_ids is None:
        cur = conn.execute(
            "DELETE FROM message WHERE id NOT IN (SELECT DISTINCT message FROM recipient)"
        )
        return cur.rowcount
    n = 0
    for mid in message_ids:
        left = conn.execute("SELECT 1 FROM recipient WHERE message = ? LIMIT 1", (mid,)).fetchone()
        if left is None:
            n += conn.execute("DELETE FROM message WHERE id = ?", (mid,)).rowcount
    return n


_MSG_COLUMNS = "id, queue_id, message_id, sender, size, arrived, is_dsn, delay_notified"


def _recipients(conn: sqlite3.Connection, mid: int, due_by: float | None) -> list[QueuedRecipient]:
    sql = (
        "SELECT id, address, route, attempts, next_attempt, last_error FROM recipient "
        "WHERE message = ?"
    )
    args: tuple[object, ...] = (mid,)
    if due_by is not None:
        sql += " AND next_attempt <= ?"
        args = (mid, due_by)
    return [QueuedRecipient(*r) for r in conn.execute(sql + " ORDER BY id", args)]


def read_messages(
    conn: sqlite3.Connection,
    *,
    due_by: float | None = None,
    exclude: Sequence[int] = (),
    limit: int = 100,
    with_body: bool = False,
    queue_ids: Sequence[str] | None = None,
) -> list[QueuedMessage]:
    """Messages with their recipients: only recipients due by ``due_by`` if given."""
    where: list[str] = []
    args: list[object] = []
    if due_by is not None:
        where.append("id IN (SELECT message FROM recipient WHERE next_attempt <= ?)")
        args.append(due_by)
    if exclude:
        where.append(f"id NOT IN ({','.join('?' * len(exclude))})")
        args.extend(exclude)
    if queue_ids is not None:
        where.append(f"queue_id IN ({','.join('?' * len(queue_ids))})")
        args.extend(queue_ids)
    sql = f"SELECT {_MSG_COLUMNS}{', body' if with_body else ''} FROM message"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY arrived, id LIMIT ?"
    args.append(limit)
    out = []
    for row in conn.execute(sql, args).fetchall():
        rcpts = _recipients(conn, row[0], due_by)
        out.append(
            QueuedMessage(
                row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), bool(row[7]),
                tuple(rcpts), bytes(row[8]) if with_body else b"",
            )
        )
    return out


def next_due(conn: sqlite3.Connection, exclude: Sequence[int] = ()) -> float | None:
    sql = "SELECT MIN(next_attempt) FROM recipient"
    if exclude:
        sql += f" WHERE message NOT IN ({','.join('?' * len(exclude))})"
    row = conn.execute(sql, tuple(exclude)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def retry_now(conn: sqlite3.Connection, queue_ids: Sequence[str] | None, now: float) -> int:
    """Makes recipients due at once (all, or those of the given messages)."""
    if queue_ids is None:
        return conn.execute("UPDATE recipient SET next_attempt = ?", (now,)).rowcount
    marks = ",".join("?" * len(queue_ids))
    return conn.execute(
        f"UPDATE recipient SET next_attempt = ? WHERE message IN "
        f"(SELECT id FROM message WHERE queue_id IN ({marks}))",
        (now, *queue_ids),
    ).rowcount


def delete_messages(conn: sqlite3.Connection, queue_ids: Sequence[str] | None) -> int:
    if queue_ids is None:
        conn.execute("DELETE FROM recipient")
        return conn.execute("DELETE FROM message").rowcount
    marks = ",".join("?" * len(queue_ids))
    conn.execute(
        f"DELETE FROM recipient WHERE message IN "
        f"(SELECT id FROM message WHERE queue_id IN ({marks}))",
        tuple(queue_ids),
    )
    return conn.execute(
        f"DELETE FROM message WHERE queue_id IN ({marks})", tuple(queue_ids)
    ).rowcount


def count(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM message), (SELECT COUNT(*) FROM recipient)"
    ).fetchone()
    return int(row[0]), int(row[1])


# --------------------------------------------------------------------------- the open queue


class Queue:
    """The queue of one virtual server, opened by its owner with the fencing epoch."""

    def __init__(self, path: Path, clock: Callable[[], float],
                 finished: Path | None = None) -> None:
        """``finished``: the directory of the record of finished recipients
        (:mod:`clustermail.mail.queue.finished`), beside the transaction logs."""
        self.path = path
        self._clock = clock
        self._finished = None if finished is None else FinishedLog(finished)
        self._writer: GroupCommitWriter | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()  # one reader connection, used from worker threads
        self._epoch: int | None = None

    def open(self, epoch: int) -> None:
        """Opens (creating) the file and records the epoch; an older epoch than the one
        recorded is refused (a newer owner exists)."""
        conn = connect(self.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT epoch FROM mount WHERE id = 1").fetchone()
            if row is not None and epoch < row[0]:
                raise QueueFencedError(
                    f"queue {self.path} was opened with epoch {row[0]}, newer than ours "
                    f"({epoch}): a newer owner exists"
                )
            conn.execute(
                "INSERT OR REPLACE INTO mount (id, epoch, mounted_at, owner) VALUES (1, ?, ?, ?)",
                (epoch, self._clock(), f"{socket.gethostname()}:{os.getpid()}"),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        self._writer = GroupCommitWriter(conn, self.path, epoch, clock=self._clock)
        self._reader = connect(self.path)
        self._epoch = epoch

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            writer._conn.close()
        if self._finished is not None:
            self._finished.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            # Under the read lock: closing a connection another thread is reading with
            # crashes the interpreter (sqlite3, check_same_thread=False); a read that
            # starts later fails cleanly on the closed connection instead.
            with self._read_lock:
                reader.close()

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def _write(self, apply: Callable[[Tx], T], size: int = 0) -> T:
        if self._writer is None:
            raise QueueError(f"queue {self.path} is not open")
        return await self._writer.submit_async(apply, size=size)

    async def enqueue(self, message: NewMessage) -> str:
        """Stores a message durably (after the commit); returns its queue id."""
        await self._write(lambda tx: insert(tx.conn, message, tx.now), len(message.body))
        return message.queue_id

    async def record(
        self,
        outcomes: Sequence[Outcome],
        *,
        new: Sequence[NewMessage] = (),
        delay_notified: Sequence[int] = (),
    ) -> None:
        """One transaction: the outcomes of an attempt, the bounces it produced, and the
        delay notices sent (so a crash cannot send a bounce twice or lose it)."""

        def apply(tx: Tx) -> None:
            for msg in new:
                insert(tx.conn, msg, tx.now)
            for mid in delay_notified:
                tx.conn.execute("UPDATE message SET delay_notified = 1 WHERE id = ?", (mid,))
            done = apply_outcomes(tx.conn, outcomes)
            if self._finished is not None:  # durable before the queue forgets them
                self._finished.append(done, tx.now)

        await self._write(apply, sum(len(m.body) for m in new))

    async def retry_route(self, route: str) -> int:
        """Makes the waiting recipients of one route due now (say, a database of this
        virtual server that was being restored is mounted again); returns how many."""

        def apply(tx: Tx) -> int:
            return tx.conn.execute(
                "UPDATE recipient SET next_attempt = ? WHERE route = ? AND next_attempt > ?",
                (tx.now, route, tx.now)).rowcount

        return await self._write(apply)

    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            raise QueueError(f"queue {self.path} is not open")
        return self._reader

    async def due(self, now: float, exclude: Sequence[int], limit: int) -> list[QueuedMessage]:
        """Messages with recipients due by ``now`` (bodies included), oldest first."""
        conn = self._read_conn()

        def read() -> list[QueuedMessage]:
            with self._read_lock:
                conn.execute("BEGIN")
                try:
                    return read_messages(
                        conn, due_by=now, exclude=exclude, limit=limit, with_body=True
                    )
                finally:
                    conn.execute("COMMIT")

        return await asyncio.to_thread(read)

    async def next_due(self, exclude: Sequence[int]) -> float | None:
        conn = self._read_conn()

        def read() -> float | None:
            with self._read_lock:
                return next_due(conn, exclude)

        return await asyncio.to_thread(read)

    def check_owner(self) -> None:
        """Raises QueueFencedError if a newer owner has opened the queue since we did
        (the file records the epoch of its latest opener)."""
        conn = self._read_conn()
        with self._read_lock:
            row = conn.execute("SELECT epoch FROM mount WHERE id = 1").fetchone()
        if row is not None and self._epoch is not None and int(row[0]) > self._epoch:
            raise QueueFencedError(
                f"queue {self.path} was opened with epoch {row[0]}, newer than ours "
                f"({self._epoch}): a newer owner exists"
            )

    def counts(self) -> tuple[int, int]:
        """(messages, recipients) in the queue."""
        conn = self._read_conn()
        with self._read_lock:
            return count(conn)

    def oldest_arrival(self) -> float | None:
        """When the oldest queued message arrived (None: the queue is empty)."""
        conn = self._read_conn()
        with self._read_lock:
            row = conn.execute("SELECT MIN(arrived) FROM message").fetchone()
        return None if row is None or row[0] is None else float(row[0])
