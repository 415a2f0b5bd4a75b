"""The embedded backend: one SQLite file (WAL) shared by the processes of a local cluster.

No server process. Every process opens the same file; SQLite's locking makes
each write transaction atomic across processes (``BEGIN IMMEDIATE``), so
compare-and-swap holds between OS processes exactly as it does in etcd.

Leases expire on ``CLOCK_MONOTONIC``, which on Linux is one clock for the
whole machine, so every process agrees on when a lease is over. Expiry is
lazy but prompt: every operation, and every watcher poll, first sweeps the
leases whose deadline has passed, deleting their keys as ordinary delete
events at a new revision. A monotonic deadline means nothing after a reboot,
so the boot id is kept in the file and a reboot expires every lease.

Watches poll the event table (the history) every few milliseconds and are
woken at once by writes from their own process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from clustermail.coord.api import (
    Compacted,
    Compare,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    Lease,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    StoreUnavailable,
    TxnOp,
    TxnResult,
    prefix_end,
    to_bytes,
)
from clustermail.private_files import create_private_file

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type INTEGER NOT NULL,          -- 0 put, 1 delete
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    ttl REAL NOT NULL,
    expires_at REAL NOT NULL        -- CLOCK_MONOTONIC seconds
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
"""

#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_MS = 5000
#: How many times a locked or failing operation is retried before StoreUnavailable.
RETRIES = 3
#: Watch poll interval for writes made by other processes (own writes wake at once).
POLL_INTERVAL = 0.005
#: History kept for watches; older revisions are compacted automatically.
HISTORY_REVISIONS = 100_000
#: Events read per watch poll.
WATCH_BATCH_REVISIONS = 500


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


class _Writer:
    """State of one write transaction: allocates one revision lazily."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.base: int = conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
        self.rev: int | None = None
        self.seq = 0
        self.wrote = False

    def revision(self) -> int:
        """The revision of this write (allocated on first use)."""
        if self.rev is None:
            self.rev = self.base + 1
            self.conn.execute("UPDATE meta SET value=? WHERE name='revision'", (self.rev,))
        return self.rev

    def close_revision(self) -> None:
        """Ends the current revision, so the next write gets a new one (for expiry sweeps)."""
        if self.rev is not None:
            self.base = self.rev
            self.rev = None
            self.seq = 0

    def event(
        self, type_: int, key: str, value: bytes, create: int, version: int, lease: int
    ) -> None:
        rev = self.revision()
        self.conn.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
            (rev, self.seq, type_, key, value, create, version, lease),
        )
        self.seq += 1
        self.wrote = True


def _row_kv(row: tuple[str, bytes, int, int, int, int]) -> KeyValue:
    return KeyValue(row[0], bytes(row[1]), row[2], row[3], row[4], row[5])


_KV_COLUMNS = "key, value, create_rev, mod_rev, version, lease"


class SqliteStore(Store):
    """A coordination store in one SQLite file. See the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite://{path}"
        # One connection, used only from one worker thread: sqlite3 calls block,
        # and the event loop must stay free to renew leases on time.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="coord-sqlite"
        )
        self._conn: sqlite3.Connection | None = None
        # Each watcher has an event; the poller (or a local write) sets them all.
        self._wakers: set[asyncio.Event] = set()
        self._poller: asyncio.Task[None] | None = None
        self._seen_revision = 0
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        store = cls(Path(path))
        await store._call(store._open)
        return store

    def _open(self) -> None:
        if not self.path.parent.is_dir():
            raise StoreUnavailable(
                f"{self.url}: the folder {self.path.parent} does not exist"
            )
        try:
            # The store holds every password hash: owner-only, and so are the -wal
            # and -shm files, which SQLite creates with the database file's mode.
            create_private_file(self.path)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed ownership change or fencing epoch must survive
            # a power loss, or an epoch could be handed out twice.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreUnavailable(f"{self.url}: cannot open the store: {exc}") from exc
        try:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('revision', 1)")
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('compact_revision', 0)")
            boot = _boot_id()
            row = conn.execute("SELECT value FROM meta WHERE name='boot_id'").fetchone()
            if row is None or row[0] != boot:
                # Monotonic deadlines from an earlier boot are meaningless: the
                # processes that held those leases are gone. Expire them all now.
                conn.execute("UPDATE leases SET expires_at = 0")
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('boot_id', ?)", (boot,))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreUnavailable(
                f"{self.url}: the file is not a usable clustermail store: {exc}"
            ) from exc
        self._conn = conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notify()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        finally:
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"{self.url}: the store is closed")
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for attempt in range(RETRIES):
            try:
                return await loop.run_in_executor(self._executor, fn)
            except sqlite3.OperationalError as exc:
                # "database is locked" after the busy timeout, or a transient
                # I/O error: retry a bounded number of times.
                last = exc
                await asyncio.sleep(0.05 * (attempt + 1))
            except sqlite3.DatabaseError as exc:
                raise StoreUnavailable(f"{self.url}: {exc}") from exc
        raise StoreUnavailable(f"{self.url}: {last} (after {RETRIES} attempts)")

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"{self.url}: the store is closed")
        return self._conn

    def _write(self, body: Callable[[_Writer], T]) -> T:
        """Runs ``body`` in one IMMEDIATE transaction after sweeping expired leases."""
        conn = self._c()
        conn.execute("BEGIN IMMEDIATE")
        try:
            w = _Writer(conn)
            self._sweep(w, time.monotonic())
            result = body(w)
            if w.wrote:
                self._maybe_compact(w)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Runs ``body`` in one read snapshot; sweeps first if a lease has expired."""
        conn = self._c()
        now = time.monotonic()
        row = conn.execute("SELECT 1 FROM leases WHERE expires_at <= ? LIMIT 1", (now,)).fetchone()
        if row is not None:
            self._write(lambda w: None)
        conn.execute("BEGIN")
        try:
            return body(conn)
        finally:
            conn.execute("COMMIT")

    def _notify(self) -> None:
        # Wake this process's watchers now; other processes' writes are seen by the poller.
        for waker in self._wakers:
            waker.set()

    def _sweep(self, w: _Writer, now: float) -> None:
        expired = w.conn.execute(
            "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at, id", (now,)
        ).fetchall()
        for (lease_id,) in expired:
            self._drop_lease(w, lease_id)
            # One revision per expired lease, as etcd does for a lease revoke.
            w.close_revision()

    def _drop_lease(self, w: _Writer, lease_id: int) -> None:
        keys = w.conn.execute(
            "SELECT key FROM kv WHERE lease=? ORDER BY key", (lease_id,)
        ).fetchall()
        for (key,) in keys:
            self._delete_key(w, key)
        w.conn.execute("DELETE FROM leases WHERE id=?", (lease_id,))

    def _maybe_compact(self, w: _Writer) -> None:
        rev = w.rev if w.rev is not None else w.base
        if rev % 1000 == 0 and rev > HISTORY_REVISIONS:
            self._compact(w.conn, rev - HISTORY_REVISIONS)

    @staticmethod
    def _compact(conn: sqlite3.Connection, revision: int) -> None:
        conn.execute("DELETE FROM events WHERE rev < ?", (revision,))
        conn.execute(
            "UPDATE meta SET value=max(value, ?) WHERE name='compact_revision'", (revision,)
        )

    # ------------------------------------------------------------------ primitive ops

    def _get_kv(self, conn: sqlite3.Connection, key: str) -> KeyValue | None:
        row = conn.execute(f"SELECT {_KV_COLUMNS} FROM kv WHERE key=?", (key,)).fetchone()
        return _row_kv(row) if row else None

    def _range_kvs(self, conn: sqlite3.Connection, prefix: str) -> list[KeyValue]:
        if prefix:
            rows = conn.execute(
                f"SELECT {_KV_COLUMNS} FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, prefix_end(prefix)),
            ).fetchall()
        else:
            rows = conn.execute(f"SELECT {_KV_COLUMNS} FROM kv ORDER BY key").fetchall()
        return [_row_kv(r) for r in rows]

    def _put_key(self, w: _Writer, key: str, value: bytes, lease: int) -> int:
        if lease and w.conn.execute("SELECT 1 FROM leases WHERE id=?", (lease,)).fetchone() is None:
            raise LeaseNotFound(lease)
        old = self._get_kv(w.conn, key)
        rev = w.revision()
        create = old.create_revision if old else rev
        version = old.version + 1 if old else 1
        w.conn.execute(
            "INSERT OR REPLACE INTO kv VALUES (?,?,?,?,?,?)",
            (key, value, create, rev, version, lease),
        )
        w.event(0, key, value, create, version, lease)
        return rev

    def _delete_key(self, w: _Writer, key: str) -> bool:
        cur = w.conn.execute("DELETE FROM kv WHERE key=?", (key,))
        if cur.rowcount == 0:
            return False
        w.event(1, key, b"", 0, 0, 0)
        return True

    def _delete_range(self, w: _Writer, key: str, prefix: bool) -> int:
        if not prefix:
            return int(self._delete_key(w, key))
        keys = [kv.key for kv in self._range_kvs(w.conn, key)]
        for k in keys:
            self._delete_key(w, k)
        return len(keys)

    # ------------------------------------------------------------------ Store API

    async def get(self, key: str) -> KeyValue | None:
        return await self._call(lambda: self._read(lambda c: self._get_kv(c, key)))

    async def range(self, prefix: str) -> RangeResult:
        def body(conn: sqlite3.Connection) -> RangeResult:
            rev = conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
            return RangeResult(self._range_kvs(conn, prefix), rev)

        return await self._call(lambda: self._read(body))

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        data = to_bytes(value)
        rev = await self._call(lambda: self._write(lambda w: self._put_key(w, key, data, lease)))
        self._notify()
        return rev

    async def delete(self, key: str) -> bool:
        existed = await self._call(lambda: self._write(lambda w: self._delete_key(w, key)))
        self._notify()
        return existed

    async def delete_prefix(self, prefix: str) -> int:
        n = await self._call(lambda: self._write(lambda w: self._delete_range(w, prefix, True)))
        self._notify()
        return n

    async def txn(
        self,
        compare: Sequence[Compare],
        then: Sequence[TxnOp] = (),
        otherwise: Sequence[TxnOp] = (),
    ) -> TxnResult:
        def body(w: _Writer) -> TxnResult:
            ok = all(c.holds(self._get_kv(w.conn, c.key)) for c in compare)
            responses: list[list[KeyValue] | int] = []
            for op in then if ok else otherwise:
                if isinstance(op, Put):
                    responses.append(self._put_key(w, op.key, to_bytes(op.value), op.lease))
                elif isinstance(op, Delete):
                    responses.append(self._delete_range(w, op.key, op.prefix))
                elif isinstance(op, Get):
                    if op.prefix:
                        responses.append(self._range_kvs(w.conn, op.key))
                    else:
                        kv = self._get_kv(w.conn, op.key)
                        responses.append([kv] if kv else [])
                else:  # pragma: no cover - the type checker rules this out
                    raise TypeError(f"not a transaction op: {op!r}")
            rev = w.rev if w.rev is not None else w.base
            return TxnResult(ok, rev, responses)

        result = await self._call(lambda: self._write(body))
        self._notify()
        return result

    async def revision(self) -> int:
        def body(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0])

        return await self._call(lambda: self._read(body))

    # ------------------------------------------------------------------ leases

    async def grant(self, ttl: float, *, peers_expire: bool = False) -> Lease:
        # Every poll expires leases on time here: peers have nothing to add.
        if ttl <= 0:
            raise ValueError("a lease TTL must be positive")

        def body(w: _Writer) -> Lease:
            while True:
                lease_id = random.randrange(1, 2**62)
                exists = w.conn.execute("SELECT 1 FROM leases WHERE id=?", (lease_id,)).fetchone()
                if not exists:
                    break
            w.conn.execute(
                "INSERT INTO leases VALUES (?,?,?)", (lease_id, ttl, time.monotonic() + ttl)
            )
            return Lease(lease_id, ttl)

        return await self._call(lambda: self._write(body))

    async def keep_alive_once(self, lease_id: int) -> float:
        def body(w: _Writer) -> float:
            row = w.conn.execute("SELECT ttl FROM leases WHERE id=?", (lease_id,)).fetchone()
            if row is None:
                raise LeaseNotFound(lease_id)
            ttl = float(row[0])
            w.conn.execute(
                "UPDATE leases SET expires_at=? WHERE id=?", (time.monotonic() + ttl, lease_id)
            )
            return ttl

        try:
            return await self._call(lambda: self._write(body))
        finally:
            self._notify()  # a sweep may have expired other leases

    async def revoke(self, lease_id: int) -> None:
        def body(w: _Writer) -> None:
            if w.conn.execute("SELECT 1 FROM leases WHERE id=?", (lease_id,)).fetchone():
                self._drop_lease(w, lease_id)

        await self._call(lambda: self._write(body))
        self._notify()

    async def time_to_live(self, lease_id: int) -> float | None:
        def body(conn: sqlite3.Connection) -> float | None:
            row = conn.execute("SELECT expires_at FROM leases WHERE id=?", (lease_id,)).fetchone()
            if row is None:
                return None
            left = float(row[0]) - time.monotonic()
            return left if left > 0 else None

        return await self._call(lambda: self._read(body))

    # ------------------------------------------------------------------ watches

    async def compact(self, revision: int) -> None:
        def body(w: _Writer) -> None:
            self._compact(w.conn, revision)

        await self._call(lambda: self._write(body))

    def _poll(
        self, prefix: str, next_rev: int
    ) -> tuple[list[Event], int, int]:
        """Reads events from ``next_rev`` on; returns (events, new next_rev, compact rev)."""

        def body(conn: sqlite3.Connection) -> tuple[list[Event], int, int]:
            current = conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
            compacted = conn.execute(
                "SELECT value FROM meta WHERE name='compact_revision'"
            ).fetchone()[0]
            if next_rev < compacted:
                return [], next_rev, compacted
            if next_rev > current:
                return [], next_rev, compacted
            upto = min(current, next_rev + WATCH_BATCH_REVISIONS - 1)
            sql = (
                "SELECT rev, type, key, value, create_rev, version, lease FROM events "
                "WHERE rev >= ? AND rev <= ?"
            )
            args: tuple[object, ...] = (next_rev, upto)
            if prefix:
                sql += " AND key >= ? AND key < ?"
                args += (prefix, prefix_end(prefix))
            rows = conn.execute(sql + " ORDER BY rev, seq", args).fetchall()
            events = [
                Event(
                    EventType.PUT if r[1] == 0 else EventType.DELETE,
                    r[2],
                    bytes(r[3]),
                    r[0],
                    r[4],
                    r[5],
                    r[6],
                )
                for r in rows
            ]
            return events, upto + 1, compacted

        return self._read(body)

    def _tick(self) -> int:
        """One poller step: sweeps expired leases and returns the current revision."""
        conn = self._c()
        row = conn.execute(
            "SELECT (SELECT value FROM meta WHERE name='revision'), "
            "(SELECT min(expires_at) FROM leases)"
        ).fetchone()
        if row[1] is not None and row[1] <= time.monotonic():
            self._write(lambda w: None)
            return int(conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0])
        return int(row[0])

    async def _poll_loop(self) -> None:
        """Watches the file for other processes' commits and for lease expiry.

        One poller per store object, however many watches: the cost of an
        idle watch is one small read every POLL_INTERVAL."""
        failures = 0
        while not self._closed:
            try:
                rev = await self._call(self._tick)
                failures = 0
            except StoreUnavailable:
                failures += 1
                if failures >= RETRIES:
                    self._notify()  # watchers will try themselves and raise
                await asyncio.sleep(POLL_INTERVAL * 10)
                continue
            if rev != self._seen_revision:
                self._seen_revision = rev
                self._notify()
            await asyncio.sleep(POLL_INTERVAL)

    async def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[Event]:
        next_rev = start_revision if start_revision is not None else await self.revision() + 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())
        waker = asyncio.Event()
        self._wakers.add(waker)
        try:
            while not self._closed:
                waker.clear()
                events, new_next, compacted = await self._call(
                    lambda n=next_rev: self._poll(prefix, n)  # type: ignore[misc]
                )
                if next_rev < compacted:
                    raise Compacted(next_rev, compacted)
                next_rev = new_next
                for event in events:
                    yield event
                if not events:
                    # The timeout is a safety net only; the poller wakes us.
                    # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
                    # cancellation that arrives as the waker fires, and the watch
                    # (and whoever awaits its cancelled task) would run on forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await waker.wait()
            raise StoreUnavailable(f"{self.url}: the store is closed")
        finally:
            self._wakers.discard(waker)

