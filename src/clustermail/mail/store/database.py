"""A mailbox database: one SQLite file, mounted by one owner at a time.

Reads run on per-thread reader connections (WAL readers never block the writer). Every
write is a job for the database's group-commit writer (see ``writer``): protocol-facing
writes are ``async`` and resolve after the commit; ``*_sync`` twins serve tools and tests.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from clustermail.mail.store import (
    bodies,
    check,
    delivery,
    flags,
    folders,
    index,
    mailboxes,
    messages,
    mime,
    names,
    quota,
    retention,
    schema,
    usage,
)
from clustermail.mail.store.checkpoint import WAL_SIZE_LIMIT, Checkpointer
from clustermail.mail.store.errors import (
    DatabaseOpenError,
    InvalidFolderNameError,
    MailboxChangedError,
    MountRefusedError,
    NotMountedError,
    QuotaExceededError,
    StoreError,
    from_sqlite,
)
from clustermail.mail.store.flag_log import FlagLog
from clustermail.mail.store.index import FolderListing
from clustermail.mail.store.messages import FlagMode
from clustermail.mail.store.quota import Decision, QuotaLimits
from clustermail.mail.store.readers import HeldReader
from clustermail.mail.store.snapshot import FolderSnapshot, SnapshotCache
from clustermail.mail.store.translog.errors import DatabaseBehindLogError
from clustermail.mail.store.translog.journal import Journal
from clustermail.mail.store.translog.manifest import StorageGroupLogs, roll_forward, store_id
from clustermail.mail.store.types import (
    AppendResult,
    CopyResult,
    DatabaseSettings,
    DeliveryResult,
    FlagChange,
    FolderChanges,
    FolderInfo,
    FolderStatus,
    MountInfo,
    QuotaReport,
    RecoveredMessage,
    StoreResult,
)
from clustermail.mail.store.writer import GroupCommitWriter, Tx, WriterStats

T = TypeVar("T")
Listener = Callable[[frozenset[str]], None]


def _settings_to_json(s: DatabaseSettings) -> str:
    return json.dumps(asdict(s))


def _settings_from_json(text: str) -> DatabaseSettings:
    d = json.loads(text)
    return DatabaseSettings(
        max_message_bytes=d["max_message_bytes"],
        retention_days=d["retention_days"],
        quota=QuotaLimits(**d["quota"]),
        quota_full_permanent=d["quota_full_permanent"],
    )


class MailboxDatabase:
    def __init__(
        self,
        path: Path | str,
        *,
        name: str | None = None,
        create: bool = True,
        settings: DatabaseSettings | None = None,
        clock: Callable[[], float] = time.time,
        logs: StorageGroupLogs | None = None,
    ) -> None:
        """``settings`` apply when the database file is created; afterwards the file's own
        settings rule (see :meth:`update_settings_sync`). With ``logs`` (its storage group's
        log directory) every committed change is also in the transaction log, and a file
        the storage group recorded is never re-created empty (see ``translog``)."""
        self.path = Path(path)
        self.name = name or self.path.stem
        self._create = create
        self._initial_settings = settings or DatabaseSettings()
        self._clock = clock
        self._writer: GroupCommitWriter | None = None
        self._logs = logs
        self._journal: Journal | None = None
        self._checkpointer: Checkpointer | None = None
        self._settings = self._initial_settings
        self._epoch: int | None = None
        self._local = threading.local()
        self._generation = 0
        self._changes = 0  # see change_count
        #: change_count of the last commit that was not a flag change (mounts count too)
        self._other_change = 0
        self._snapshots = SnapshotCache()
        # a folder forgotten in a commit's hooks: that commit counts as another kind
        self._flag_log = FlagLog(on_forget=self._flag_log_forgot)
        self._readers: list[HeldReader] = []
        self._readers_lock = threading.Lock()
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------------ mount / dismount

    @property
    def mounted(self) -> bool:
        return self._writer is not None

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def settings(self) -> DatabaseSettings:
        return self._settings

    @property
    def failed(self) -> StoreError | None:
        """Why the mounted database takes no more writes (fenced by a newer owner, or a
        change it could not log); None while it is healthy."""
        writer = self._writer
        return None if writer is None else (writer.fenced or writer.broken)

    @property
    def change_count(self) -> int:
        """Counts commits (and mounts, dismounts): raised after each commit, before any of
        its callers is answered. A reader that saw the same count before its last read of
        the store has nothing new to read (IMAP sessions skip looking for news then)."""
        return self._changes

    def _flag_log_forgot(self) -> None:
        self._other_change = self._changes + 1  # the commit whose hooks run now

    def _after_commit(self, size: int, flag_only: bool) -> bool:
        # In the writer thread, between the COMMIT (and its hooks) and the answers
        # (GroupCommitWriter); flag_only: a batch of set_flags and claim_recent jobs only,
        # each recorded in the flag log by its hook.
        if not flag_only:
            self._other_change = self._changes + 1  # before the count that makes it visible
        self._release_readers()  # before the count: a reader that sees it reads the commit
        self._changes += 1
        checkpointer = self._checkpointer
        return checkpointer is not None and checkpointer.poke(size)

    @property
    def stats(self) -> WriterStats:
        """Commit counters of the group-commit writer (commits, jobs, largest batch)."""
        if self._writer is None:
            raise NotMountedError(self.path)
        return self._writer.stats

    def mount(self, epoch: int, *, owner: str | None = None) -> MountInfo:
        """Open the database for this owner. The fencing epoch is recorded in the file; a
        mount with an older epoch than the recorded one is refused (MountRefusedError)."""
        if self._writer is not None:
            raise StoreError(f"{self.path} is already mounted (epoch {self._epoch})")
        started = time.perf_counter()
        wal = self.path.with_name(self.path.name + "-wal")
        unclean = wal.exists() and wal.stat().st_size > 0
        entry = None
        if self._logs is not None:
            entry = self._logs.check_file(self.name, self.path)  # a lost file: refused
        new = not self.path.exists()
        conn = schema.connect(self.path, create=self._create)
        journal: Journal | None = None
        needs_id = False
        try:
            if self._logs is not None:
                try:
                    journal, needs_id = self._logs.open_journal(
                        conn, self.name, self.path, new=new, entry=entry
                    )
                except DatabaseBehindLogError as behind:  # the log has its last commits
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    conn.close()
                    roll_forward(self._logs, self.name, behind)
                    conn = schema.connect(self.path, create=False)
                    journal, needs_id = self._logs.open_journal(
                        conn, self.name, self.path, new=False, entry=entry
                    )
                journal.acquire()
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT epoch FROM mount WHERE id = 1").fetchone()
            if row is not None and epoch < row[0]:
                raise MountRefusedError(self.path, epoch, row[0])
            conn.execute(
                "INSERT OR REPLACE INTO mount (id, epoch, mounted_at, owner) VALUES (1, ?, ?, ?)",
                (epoch, self._clock(), owner or f"{socket.gethostname()}:{os.getpid()}"),
            )
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('settings', ?)",
                (_settings_to_json(self._initial_settings),),
            )
            text = conn.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()[0]
            usage.ensure_counted(conn)
            if journal is not None:
                if needs_id:
                    store_id(conn, journal.log.db_id)
                journal.stamp(conn)
            conn.execute("COMMIT")
            if journal is not None:
                journal.ship(self._clock())
                journal.release()
            self._settings = _settings_from_json(text)
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if journal is not None:
                journal.release()
                journal.close()
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise DatabaseOpenError(self.path, str(exc)) from None
            if isinstance(exc, KeyError | ValueError | TypeError):
                raise DatabaseOpenError(self.path, f"unreadable settings: {exc!r}") from None
            raise
        self._epoch = epoch
        self._generation += 1
        self._changes += 1
        self._other_change = self._changes
        self._snapshots.clear()
        self._flag_log.clear()
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        self._checkpointer = Checkpointer(
            lambda: schema.connect(self.path, create=False), self.path
        )
        self._journal = journal
        if journal is not None:
            # The log, fsynced before every answer, is what makes a commit durable (as an
            # Exchange storage group's log is); the WAL is fsynced by checkpoints, and a
            # file that lost its last commits in a crash is rolled forward at mount.
            conn.execute("PRAGMA synchronous = NORMAL")
        self._writer = GroupCommitWriter(
            conn, self.path, epoch, self._notify, self._clock, self._after_commit, journal,
            release_readers=self._release_readers,
        )
        return MountInfo(self.path, epoch, time.perf_counter() - started, unclean)

    def dismount(self) -> None:
        """Finish queued writes, checkpoint the WAL into the file and close everything."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        conn = writer._conn
        journal, self._journal = self._journal, None
        try:
            if journal is not None:
                journal.acquire()  # no other process's commit is between its COMMIT and log
            self._release_readers()  # a held snapshot would make TRUNCATE wait
            try:
                if writer.fenced is None:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # the next owner's open recovers the WAL anyway
            conn.close()
        finally:
            if journal is not None:
                journal.release()
                self._record_dismount(journal)
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        self._generation += 1
        self._changes += 1
        self._other_change = self._changes
        self._snapshots.clear()
        self._flag_log.clear()

    def _record_dismount(self, journal: Journal) -> None:
        try:
            if self._logs is not None and journal.log.tail.txn is not None:
                self._logs.record(self.name, journal.log.db_id, journal.log.tail.txn)
        except StoreError:
            pass  # only a hint for messages; the log itself is the record
        finally:
            journal.close()

    @property
    def journal(self) -> Journal | None:
        """The transaction log binding while mounted with logs (backups read through it)."""
        return self._journal

    def __enter__(self) -> MailboxDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dismount()

    # ------------------------------------------------------------------ plumbing

    def add_listener(self, listener: Listener) -> None:
        """Called from the writer thread after each commit with the mailboxes it changed
        (IDLE and other sessions then read :meth:`changes_since`)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _notify(self, touched: set[str]) -> None:
        frozen = frozenset(touched)
        for listener in list(self._listeners):
            listener(frozen)

    def _read(self) -> HeldReader:
        """``with self._read() as conn``: one consistent snapshot for the reads of one
        call — the thread's held one while no commit happened since it began (see
        ``readers``); an SQLite error comes out as the store's error naming the file."""
        if self._writer is None:
            raise NotMountedError(self.path)
        cached = getattr(self._local, "reader", None)
        if cached is not None and cached[0] == self._generation:
            reader: HeldReader = cached[1]
            return reader
        reader = HeldReader(schema.connect(self.path, create=False), self._wrap_error)
        with self._readers_lock:
            self._readers.append(reader)
        self._local.reader = (self._generation, reader)
        return reader

    def _wrap_error(self, exc: sqlite3.Error) -> StoreError:
        return from_sqlite(self.path, exc)

    def _release_readers(self, wait: float = 0.0) -> None:
        """Ends the readers' held snapshots (see ``readers``): the writer thread, after each
        commit and before each write, and around its checkpoint waiting at most ``wait``
        seconds in all for reads under way."""
        if wait <= 0:  # after each commit and before each write: never waits
            for reader in tuple(self._readers):
                reader.release()
            return
        deadline = time.monotonic() + wait
        for reader in tuple(self._readers):
            reader.release(max(0.0, deadline - time.monotonic()))


    def _submit(
        self,
        apply: Callable[[Tx], T],
        *,
        prepare: Callable[[], None] | None = None,
        size: int = 0,
        durable: bool = True,
        group: object | None = None,
    ) -> Future[T]:
        if self._writer is None:
            raise NotMountedError(self.path)
        return self._writer.submit(
            apply, prepare=prepare, size=size, durable=durable, group=group
        )

    def _sync(self, apply: Callable[[Tx], T], *, durable: bool = True) -> T:
        return self._submit(apply, durable=durable).result()

    async def _async(
        self,
        apply: Callable[[Tx], T],
        *,
        prepare: Callable[[], None] | None = None,
        size: int = 0,
        durable: bool = True,
        group: object | None = None,
    ) -> T:
        if self._writer is None:
            raise NotMountedError(self.path)
        return await self._writer.submit_async(
            apply, prepare=prepare, size=size, durable=durable, group=group
        )

    # ------------------------------------------------------------------ administration

    def create_mailbox_sync(self, mailbox: str, *, quota_limits: QuotaLimits | None = None) -> None:
        """A mailbox with INBOX, Sent, Drafts, Trash, Junk and Archive (RFC 6154 roles)."""

        def apply(tx: Tx) -> None:
            mailboxes.create(tx.conn, mailbox, tx.now, quota_limits)
            tx.touched.add(mailbox)

        self._sync(apply)

    def delete_mailbox_sync(
        self, mailbox: str, *, expect_uidnext: Mapping[str, int] | None = None
    ) -> None:
        """Remove a mailbox with all its folders, messages and deleted items. With
        ``expect_uidnext`` (folder name -> UIDNEXT), only if the mailbox has exactly those
        folders at those UIDNEXTs — nothing arrived since the caller copied it — else
        MailboxChangedError and nothing is deleted (how a mailbox move ends safely)."""

        def apply(tx: Tx) -> None:
            mid = folders.mailbox_id(tx.conn, mailbox)
            if expect_uidnext is not None:
                current = dict(
                    tx.conn.execute(
                        "SELECT name, uidnext FROM folder WHERE mailbox_id = ?", (mid,)
                    ).fetchall()
                )
                if current != dict(expect_uidnext):
                    raise MailboxChangedError(mailbox, "new messages or folders arrived")
            for (fid,) in tx.conn.execute(
                "SELECT id FROM folder WHERE mailbox_id = ?", (mid,)
            ).fetchall():
                _drop_folder(tx.conn, fid)
            items = [
                b
                for (b,) in tx.conn.execute(
                    "SELECT body_id FROM deleted_item WHERE mailbox_id = ?", (mid,)
                )
            ]
            tx.conn.execute("DELETE FROM deleted_item WHERE mailbox_id = ?", (mid,))
            bodies.release(tx.conn, items)
            tx.conn.execute("DELETE FROM subscription WHERE mailbox_id = ?", (mid,))
            tx.conn.execute("DELETE FROM mailbox WHERE id = ?", (mid,))
            tx.touched.add(mailbox)

        self._sync(apply)

    def set_quota_sync(self, mailbox: str, limits: QuotaLimits | None) -> None:
        """Override the database's quota for one mailbox; None returns it to the default."""
        self._sync(lambda tx: mailboxes.set_quota(tx.conn, mailbox, limits))

    def update_settings_sync(self, **changes: Any) -> DatabaseSettings:
        """Change database settings (max_message_bytes, retention_days, quota,
        quota_full_permanent); they are stored in the database file."""
        new = replace(self._settings, **changes)

        def apply(tx: Tx) -> None:
            tx.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('settings', ?)",
                (_settings_to_json(new),),
            )

        self._sync(apply)
        self._settings = new
        return new

    def recover_deleted_sync(
        self, mailbox: str, since: float | None = None
    ) -> list[RecoveredMessage]:
        """Restore retained deleted items (deleted at or after ``since``) into their
        original folders with new UIDs."""

        def apply(tx: Tx) -> list[RecoveredMessage]:
            tx.touched.add(mailbox)
            return retention.recover(tx.conn, mailbox, since, tx.now)

        return self._sync(apply)

    async def recover_deleted(
        self, mailbox: str, since: float | None = None
    ) -> list[RecoveredMessage]:
        def apply(tx: Tx) -> list[RecoveredMessage]:
            tx.touched.add(mailbox)
            return retention.recover(tx.conn, mailbox, since, tx.now)

        return await self._async(apply)

    def purge_deleted_items_sync(self) -> int:
        """Delete retained items older than the retention window; returns how many."""
        days = self._settings.retention_days
        return self._sync(lambda tx: retention.purge(tx.conn, tx.now, days))

    def check_sync(self, *, repair: bool = False) -> check.CheckReport:
        """Integrity and consistency check of the mounted database; repairs run as a fenced
        write transaction."""
        if repair:
            report = self._sync(lambda tx: check.run(tx.conn, self.path, repair=True, now=tx.now))
            self._snapshots.clear()  # a repair may change listings without a new modseq
            self._flag_log.clear()
            return report
        with self._read() as conn:
            return check.run(conn, self.path, repair=False, now=self._clock())

    # ------------------------------------------------------------------ reads

    def list_mailboxes(self) -> list[str]:
        with self._read() as conn:
            return mailboxes.names_all(conn)

    def has_mailbox(self, mailbox: str) -> bool:
        with self._read() as conn:
            return mailboxes.find(conn, mailbox) is not None

    def quota(self, mailbox: str) -> QuotaReport:
        with self._read() as conn:
            return mailboxes.report(mailboxes.get(conn, mailbox), self._settings)

    def may_send(self, mailbox: str) -> Decision:
        """For SMTP submission: refused (5.2.2) once the mailbox is over prohibit-send."""
        report = self.quota(mailbox)
        return quota.may_send(report.used_bytes, report.limits)

    def list_folders(self, mailbox: str) -> list[FolderInfo]:
        with self._read() as conn:
            return folders.list_all(conn, mailbox)

    def subscriptions(self, mailbox: str) -> list[str]:
        with self._read() as conn:
            return folders.subscriptions(conn, mailbox)

    def status(self, mailbox: str, folder: str) -> FolderStatus:
        with self._read() as conn:
            return folders.status(conn, folders.get(conn, mailbox, folder))

    def list_messages(self, mailbox: str, folder: str) -> FolderListing:
        """Every message of a folder (uid, flags, size, modseq, internal date) in UID order,
        as packed arrays: cheap even for 100 000 messages."""
        with self._read() as conn:
            return index.load(conn, folders.get(conn, mailbox, folder).id)

    def folder_snapshot(self, mailbox: str, folder: str) -> FolderSnapshot:
        """The folder's listing with UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, shared by every
        caller and kept current from the change log: SELECT reads only the folder row when
        nothing changed. Immutable; :meth:`FolderSnapshot.listing` gives a private copy."""
        claims = self._snapshots.claims  # before the read: see SnapshotCache.get
        # The common case, an unchanged folder: its row alone matches the cached snapshot.
        with self._read() as conn:
            row = folders.find(conn, mailbox, names.normalize(folder))
            if row is not None and (snap := self._snapshots.cached(row)) is not None:
                return snap
            return self._snapshots.get(conn, folders.get(conn, mailbox, folder), claims)

    def recent_among(self, mailbox: str, folder: str, uids: Iterable[int]) -> list[int]:
        """Those of ``uids`` still marked \\Recent (nobody claimed them yet)."""
        with self._read() as conn:
            return messages.recent_among(conn, folders.get(conn, mailbox, folder), uids)

    def fetch_raw(self, mailbox: str, folder: str, uid: int) -> bytes:
        # The hot path of POP3 RETR and IMAP BODY[]: one statement in the held snapshot.
        # Only a miss takes the path that says what is missing.
        name = names.normalize(folder)
        with self._read() as conn:
            found = messages.raw_by_name(conn, mailbox, name, uid)
        if found is not None:
            return found
        with self._read() as conn:
            return messages.raw(conn, folders.get(conn, mailbox, folder), uid)

    def fetch_range(self, mailbox: str, folder: str, uid: int, start: int, end: int) -> bytes:
        """Bytes [start, end) of a message (BODY[section] via MessageStructure.section)."""
        with self._read() as conn:
            return messages.raw_range(conn, folders.get(conn, mailbox, folder), uid, start, end)

    def fetch_structure(self, mailbox: str, folder: str, uid: int) -> mime.MessageStructure:
        """ENVELOPE, BODYSTRUCTURE and part offsets cached at delivery."""
        with self._read() as conn:
            return messages.structure(conn, folders.get(conn, mailbox, folder), uid)

    def fetch_structures(
        self, mailbox: str, folder: str, first: int, last: int
    ) -> dict[int, mime.MessageStructure]:
        """UID → structure for the messages with UIDs in ``first..last`` (one scan)."""
        with self._read() as conn:
            return messages.structures(conn, folders.get(conn, mailbox, folder), first, last)

    def fetch_structure_texts(
        self, mailbox: str, folder: str, first: int, last: int
    ) -> list[tuple[int, str]]:
        """``(uid, structure JSON)`` for the messages with UIDs in ``first..last`` (one
        scan), as stored: :meth:`~mime.MessageStructure.to_json`'s text."""
        with self._read() as conn:
            return messages.structure_texts(conn, folders.get(conn, mailbox, folder), first, last)

    def scan_raw(
        self,
        mailbox: str,
        folder: str,
        first: int,
        last: int,
        visit: Callable[[int, bytes | None], None],
        *,
        limit: int,
        prefix: bool = False,
    ) -> None:
        """Calls ``visit(uid, raw)`` for each message with a UID in ``first..last``, in UID
        order, from one snapshot and one scan: see :func:`messages.scan_raw`."""
        with self._read() as conn:
            for uid, raw in messages.scan_raw(
                conn, folders.get(conn, mailbox, folder), first, last, limit, prefix
            ):
                visit(uid, raw)

    def changes_since(self, mailbox: str, folder: str, modseq: int) -> FolderChanges:
        """New messages, flag changes and expunges after ``modseq`` (any session's). When
        everything since was a recent flag change, from memory (see ``flag_log``): one read
        of the folder row."""
        with self._read() as conn:
            row = folders.get(conn, mailbox, folder)
            changed = self._flag_log.since(row.id, row.uidvalidity, modseq, row.highestmodseq)
            if changed is not None:
                return FolderChanges(row.uidvalidity, row.highestmodseq, row.uidnext, changed, [])
            return messages.changes_since(conn, row, modseq)

    def flag_changes_since(
        self, uidvalidity: int, modseq: int, seen: int
    ) -> tuple[int, list[FlagChange]] | None:
        """For a reader that looked at the folder (UIDVALIDITY) when :attr:`change_count` was
        ``seen``, up to ``modseq``: when every commit since was a flag change, the folder's
        HIGHESTMODSEQ and the messages changed after ``modseq`` (latest change of each, in
        UID order), from memory without reading the database; else None (ask
        :meth:`changes_since`). Commits after the caller's :attr:`change_count` may be in
        the answer already (its next look finds nothing more)."""
        if self._other_change > seen:
            return None
        return self._flag_log.latest(uidvalidity, modseq)

    def mailbox_digests(self, mailbox: str) -> list[bytes]:
        """SHA-256 of every message in the mailbox (any folder): what a merge from a
        recovery database compares against."""
        with self._read() as conn:
            mid = folders.mailbox_id(conn, mailbox)
            return [bytes(d) for (d,) in conn.execute(
                "SELECT b.digest FROM message m JOIN folder f ON f.id = m.folder_id "
                "JOIN body b ON b.id = m.body_id WHERE f.mailbox_id = ?", (mid,))]

    def deleted_items(self, mailbox: str) -> int:
        with self._read() as conn:
            return retention.count(conn, mailbox)

    # ------------------------------------------------------------------ delivery

    def _delivery_job(
        self,
        message: bytes,
        recipients: Sequence[str],
        folder: str,
        internaldate: int | None,
        flag_names: Iterable[str],
    ) -> tuple[Callable[[Tx], DeliveryResult], Callable[[], None], int]:
        """The delivery's (apply, prepare, size), for _submit or _async."""
        settings = self._settings
        bodies.check_size(len(message), settings.max_message_bytes)  # before queueing 50 MB
        mask, _ = flags.parse_flags(flag_names)
        names.normalize(folder)
        prepared: list[bodies.PreparedMessage] = []

        def prepare() -> None:  # MIME analysis in the writer thread, outside the transaction
            prepared.append(bodies.prepare(message, settings.max_message_bytes))

        def apply(tx: Tx) -> DeliveryResult:
            result = delivery.deliver(
                tx.conn, prepared[0], recipients, folder, settings, tx.now, internaldate, mask
            )
            tx.touched.update(r.mailbox for r in result.delivered)
            return result

        return apply, prepare, len(message)

    async def deliver(
        self,
        message: bytes,
        recipients: Sequence[str],
        folder: str = names.INBOX,
        *,
        internaldate: int | None = None,
        flag_names: Iterable[str] = (),
    ) -> DeliveryResult:
        """Deliver to every recipient mailbox of this database; returns after the commit
        (fsync) with a result per recipient (delivered, or refused with an enhanced status
        code: 5.1.1 unknown mailbox, 5.2.2/4.2.2 over quota). MessageTooLargeError when the
        message exceeds the database's maximum size."""
        apply, prepare, size = self._delivery_job(
            message, recipients, folder, internaldate, flag_names
        )
        return await self._async(apply, prepare=prepare, size=size)

    def deliver_sync(
        self,
        message: bytes,
        recipients: Sequence[str],
        folder: str = names.INBOX,
        *,
        internaldate: int | None = None,
        flag_names: Iterable[str] = (),
    ) -> DeliveryResult:
        apply, prepare, size = self._delivery_job(
            message, recipients, folder, internaldate, flag_names
        )
        return self._submit(apply, prepare=prepare, size=size).result()

    # ------------------------------------------------------------------ folder writes

    def _create_folder(self, mailbox: str, folder: str) -> Callable[[Tx], FolderInfo]:
        def apply(tx: Tx) -> FolderInfo:
            row = folders.create(tx.conn, mailbox, folder, tx.now)
            tx.touched.add(mailbox)
            return FolderInfo(row.name, row.special_use, False, row.uidvalidity)

        return apply

    async def create_folder(self, mailbox: str, folder: str) -> FolderInfo:
        return await self._async(self._create_folder(mailbox, folder))

    def create_folder_sync(self, mailbox: str, folder: str) -> FolderInfo:
        return self._sync(self._create_folder(mailbox, folder))

    def _rename_folder(
        self, mailbox: str, old: str, new: str
    ) -> Callable[[Tx], list[tuple[str, str]]]:
        def apply(tx: Tx) -> list[tuple[str, str]]:
            tx.touched.add(mailbox)
            if names.normalize(old) != names.INBOX:
                return folders.rename(tx.conn, mailbox, old, new, tx.now)
            # RFC 3501: renaming INBOX moves its messages to the new folder; INBOX stays.
            src = folders.get(tx.conn, mailbox, names.INBOX)
            dst = folders.create(tx.conn, mailbox, new, tx.now)
            found = messages.rows(tx.conn, src)
            bodies.reference(tx.conn, [r[1] for r in found])
            messages.insert(tx.conn, dst, [(r[1], r[2], r[3], r[4], r[5]) for r in found])
            messages.remove(
                tx.conn, folders.get(tx.conn, mailbox, names.INBOX), found, tx.now, 0, retain=False
            )
            return [(names.INBOX, dst.name)]

        return apply

    async def rename_folder(self, mailbox: str, old: str, new: str) -> list[tuple[str, str]]:
        """Rename a folder and its subfolders (UIDVALIDITY kept); returns (old, new) pairs."""
        return await self._async(self._rename_folder(mailbox, old, new))

    def rename_folder_sync(self, mailbox: str, old: str, new: str) -> list[tuple[str, str]]:
        return self._sync(self._rename_folder(mailbox, old, new))

    def _delete_folder(self, mailbox: str, folder: str) -> Callable[[Tx], None]:
        days = self._settings.retention_days

        def apply(tx: Tx) -> None:
            row = folders.get(tx.conn, mailbox, folder)
            if row.name == names.INBOX:
                raise InvalidFolderNameError("INBOX cannot be deleted")
            found = messages.rows(tx.conn, row)
            messages.remove(tx.conn, row, found, tx.now, days, retain=True)
            _drop_folder(tx.conn, row.id)
            tx.touched.add(mailbox)

        return apply

    async def delete_folder(self, mailbox: str, folder: str) -> None:
        """Delete a folder (its messages go to deleted-item retention); subfolders stay."""
        await self._async(self._delete_folder(mailbox, folder))

    def delete_folder_sync(self, mailbox: str, folder: str) -> None:
        self._sync(self._delete_folder(mailbox, folder))

    async def subscribe(self, mailbox: str, folder: str, subscribed: bool = True) -> None:
        await self._async(lambda tx: folders.subscribe(tx.conn, mailbox, folder, subscribed))

    def subscribe_sync(self, mailbox: str, folder: str, subscribed: bool = True) -> None:
        self._sync(lambda tx: folders.subscribe(tx.conn, mailbox, folder, subscribed))

    # ------------------------------------------------------------------ message writes

    def _append(
        self,
        mailbox: str,
        folder: str,
        message: bytes,
        flag_names: Iterable[str],
        internaldate: int | None,
    ) -> tuple[Callable[[Tx], AppendResult], Callable[[], None], int]:
        """The APPEND's (apply, prepare, size), for _submit or _async."""
        settings = self._settings
        bodies.check_size(len(message), settings.max_message_bytes)
        mask, keywords = flags.parse_flags(flag_names)
        prepared: list[bodies.PreparedMessage] = []

        def prepare() -> None:
            prepared.append(bodies.prepare(message, settings.max_message_bytes))

        def apply(tx: Tx) -> AppendResult:
            msg = prepared[0]
            row = folders.get(tx.conn, mailbox, folder)
            box = mailboxes.get(tx.conn, mailbox)
            _check_room(box, msg.charged, settings)
            body_id = bodies.add(tx.conn, msg)
            (uid,), modseq = messages.insert(
                tx.conn,
                row,
                [
                    (
                        body_id,
                        mask | flags.RECENT,
                        flags.encode_keywords(keywords),
                        int(tx.now) if internaldate is None else internaldate,
                        msg.size,
                    )
                ],
            )
            tx.touched.add(mailbox)
            return AppendResult(row.uidvalidity, uid, modseq)

        return apply, prepare, len(message)

    async def append(
        self,
        mailbox: str,
        folder: str,
        message: bytes,
        *,
        flag_names: Iterable[str] = (),
        internaldate: int | None = None,
    ) -> AppendResult:
        """IMAP APPEND: returns UIDPLUS APPENDUID data after the commit. QuotaExceededError
        when the mailbox would exceed its prohibit-receive limit."""
        apply, prepare, size = self._append(mailbox, folder, message, flag_names, internaldate)
        return await self._async(apply, prepare=prepare, size=size)

    def append_sync(
        self,
        mailbox: str,
        folder: str,
        message: bytes,
        *,
        flag_names: Iterable[str] = (),
        internaldate: int | None = None,
    ) -> AppendResult:
        apply, prepare, size = self._append(mailbox, folder, message, flag_names, internaldate)
        return self._submit(apply, prepare=prepare, size=size).result()

    def _set_flags(
        self,
        mailbox: str,
        folder: str,
        uids: Iterable[int],
        flag_names: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None,
    ) -> tuple[Callable[[Tx], StoreResult], object | None]:
        """The job and its writer group (see ``GroupCommitWriter.submit``)."""
        mask, keywords = flags.parse_flags(flag_names)
        wanted = list(uids)
        deferrable = (
            len(wanted) == 1 and not keywords and unchanged_since is None
            and index.PATCHES_IN_PLACE
        )

        flag_log = self._flag_log
        key = ("set_flags", mailbox, folder)

        def apply(tx: Tx) -> StoreResult:
            # Flag changes of one folder follow each other in a batch (ten sessions'
            # STOREs): the folder row and the index chunks the previous one left are still
            # true while nothing else wrote since (the writer's count of changed rows).
            conn = tx.conn
            memo: _FlagMemo | None = tx.memo.get(key)
            if memo is None or memo.stamp != conn.total_changes:
                assert tx.pending is None  # the writer wrote it, or nothing else ran since
                row = folders.get(conn, mailbox, folder)
                memo = _FlagMemo(conn.total_changes, row, row.highestmodseq)
            row = memo.row
            if deferrable:
                # One message, system flags: its index entry and the folder's HIGHESTMODSEQ
                # are written once for the run of such changes (see Tx.pending).
                result = messages.set_system_flags_unindexed(
                    conn, row.id, memo.modseq, wanted[0], mask, mode
                )
                memo.last_chunk.clear()
                for change in result.changed:
                    chunk = index.patch(
                        conn, row.id, memo.chunks, change.uid, change.flags, result.modseq
                    )
                    if chunk is not None:
                        memo.dirty.add(chunk)
            else:
                memo.chunks.clear()
                if memo.modseq != row.highestmodseq:
                    row = replace(row, highestmodseq=memo.modseq)
                result = messages.set_flags(
                    conn, row, wanted, mask, keywords, mode, unchanged_since, memo.last_chunk
                )
            if result.modseq != memo.modseq:
                memo.modseq = result.modseq
                memo.unwritten_modseq = deferrable
            memo.stamp = conn.total_changes
            tx.memo[key] = memo
            if result.changed:
                tx.touched.add(mailbox)
                tx.committed.append(
                    functools.partial(
                        flag_log.record, row.id, row.uidvalidity, result.modseq, result.changed
                    )
                )
            if memo.dirty or memo.unwritten_modseq:
                tx.pending = (key, functools.partial(memo.write, conn))  # the last step
            return result

        return apply, (key if deferrable else None)

    async def set_flags(
        self,
        mailbox: str,
        folder: str,
        uids: Iterable[int],
        flag_names: Iterable[str],
        mode: FlagMode = "add",
        *,
        unchanged_since: int | None = None,
    ) -> StoreResult:
        """IMAP STORE (mode "set", "add" or "remove"); returns the new modseq and changes.
        Answered once committed, before the commit's fsync (see ``writer``: a flag change
        lost in a power cut is not a lost message)."""
        apply, group = self._set_flags(mailbox, folder, uids, flag_names, mode, unchanged_since)
        return await self._async(apply, durable=False, group=group)

    def set_flags_sync(
        self,
        mailbox: str,
        folder: str,
        uids: Iterable[int],
        flag_names: Iterable[str],
        mode: FlagMode = "add",
        *,
        unchanged_since: int | None = None,
    ) -> StoreResult:
        apply, group = self._set_flags(mailbox, folder, uids, flag_names, mode, unchanged_since)
        return self._submit(apply, durable=False, group=group).result()

    def _copy(
        self, mailbox: str, source: str, uids: Iterable[int], dest: str, move: bool
    ) -> Callable[[Tx], CopyResult]:
        settings = self._settings
        wanted = list(uids)

        def apply(tx: Tx) -> CopyResult:
            src = folders.get(tx.conn, mailbox, source)
            dst = folders.get(tx.conn, mailbox, dest)
            if not move:
                found = messages.rows(tx.conn, src, wanted)
                size = usage.charges(tx.conn, ((r[1], r[5]) for r in found))
                _check_room(mailboxes.get(tx.conn, mailbox), size, settings)
            result, found = messages.copy(tx.conn, src, dst, wanted)
            if move and found:
                src = folders.get(tx.conn, mailbox, source)  # modseq moved on if src == dst
                messages.remove(tx.conn, src, found, tx.now, 0, retain=False)
                result = replace(result, expunged=[r[0] for r in found])
            tx.touched.add(mailbox)
            return result

        return apply

    async def copy(self, mailbox: str, source: str, uids: Iterable[int], dest: str) -> CopyResult:
        """IMAP COPY: new UIDs in ``dest`` (UIDPLUS COPYUID data)."""
        return await self._async(self._copy(mailbox, source, uids, dest, False))

    def copy_sync(self, mailbox: str, source: str, uids: Iterable[int], dest: str) -> CopyResult:
        return self._sync(self._copy(mailbox, source, uids, dest, False))

    async def move(self, mailbox: str, source: str, uids: Iterable[int], dest: str) -> CopyResult:
        """IMAP MOVE (RFC 6851): copy plus expunge from the source, in one transaction."""
        return await self._async(self._copy(mailbox, source, uids, dest, True))

    def move_sync(self, mailbox: str, source: str, uids: Iterable[int], dest: str) -> CopyResult:
        return self._sync(self._copy(mailbox, source, uids, dest, True))

    def _expunge(
        self, mailbox: str, folder: str, uids: Iterable[int] | None
    ) -> Callable[[Tx], list[int]]:
        days = self._settings.retention_days
        wanted = None if uids is None else list(uids)

        def apply(tx: Tx) -> list[int]:
            row = folders.get(tx.conn, mailbox, folder)
            found = messages.rows(tx.conn, row, wanted, deleted_only=True)
            messages.remove(tx.conn, row, found, tx.now, days, retain=True)
            if found:
                tx.touched.add(mailbox)
            return [r[0] for r in found]

        return apply

    async def expunge(
        self, mailbox: str, folder: str, uids: Iterable[int] | None = None
    ) -> list[int]:
        """Remove the \\Deleted messages (only among ``uids`` if given: UID EXPUNGE); returns
        the expunged UIDs. They stay recoverable for the retention window."""
        return await self._async(self._expunge(mailbox, folder, uids))

    def expunge_sync(
        self, mailbox: str, folder: str, uids: Iterable[int] | None = None
    ) -> list[int]:
        return self._sync(self._expunge(mailbox, folder, uids))

    async def claim_recent(self, mailbox: str, folder: str) -> list[int]:
        """The \\Recent UIDs, cleared so that no other session sees them as recent. A flag
        change (no fsync of its own): a claim lost in a power cut shows \\Recent again."""
        folder_id, uids = await self._async(
            lambda tx: _claim_recent(tx, mailbox, folder, self._flag_log), durable=False
        )
        self._snapshots.recent_claimed(folder_id, uids)  # not a modseq change: tell the cache
        return uids

    def claim_recent_sync(self, mailbox: str, folder: str) -> list[int]:
        folder_id, uids = self._sync(
            lambda tx: _claim_recent(tx, mailbox, folder, self._flag_log), durable=False
        )
        self._snapshots.recent_claimed(folder_id, uids)
        return uids


def _claim_recent(tx: Tx, mailbox: str, folder: str, flag_log: FlagLog) -> tuple[int, list[int]]:
    row = folders.get(tx.conn, mailbox, folder)
    uids = messages.claim_recent(tx.conn, row)
    if uids:
        tx.committed.append(
            functools.partial(flag_log.recent_claimed, row.id, row.uidvalidity, uids)
        )
    return row.id, uids


@dataclass(slots=True)
class _FlagMemo:
    """What a flag change leaves for the next one of its folder in the same transaction:
    valid while ``conn.total_changes`` is still ``stamp`` (no write at all since)."""

    stamp: int
    row: folders.FolderRow  # as read (its HIGHESTMODSEQ then)
    modseq: int  # the folder's HIGHESTMODSEQ as the last change left it
    #: the chunk the last written one-message change patched (see index.update)
    last_chunk: list[index.PatchedChunk] = field(default_factory=list)
    #: chunks read, and patched in memory by changes whose index writes are pending
    chunks: dict[int, bytearray] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)  # those of ``chunks`` not written yet
    unwritten_modseq: bool = False  # ``row``'s HIGHESTMODSEQ not written yet

    def write(self, conn: sqlite3.Connection) -> None:
        """The pending writes (Tx.pending): patched chunks, then the folder's row."""
        for chunk_id in sorted(self.dirty):
            conn.execute(
                "UPDATE folder_chunk SET data = ? WHERE id = ?", (self.chunks[chunk_id], chunk_id)
            )
        self.dirty.clear()
        if self.unwritten_modseq:
            conn.execute(
                "UPDATE folder SET highestmodseq = ? WHERE id = ?", (self.modseq, self.row.id)
            )
            self.unwritten_modseq = False


def _check_room(box: mailboxes.MailboxRow, size: int, settings: DatabaseSettings) -> None:
    limit = box.limits(settings).prohibit_send_receive
    if limit is not None and box.used_bytes + size > limit:
        raise QuotaExceededError(box.name, box.used_bytes, size, limit)


def _drop_folder(conn: sqlite3.Connection, folder_id: int) -> None:
    """Remove a folder whose messages were already moved out or released."""
    bodies.release(
        conn,
        [
            b
            for (b,) in conn.execute(
                "SELECT body_id FROM message WHERE folder_id = ?", (folder_id,)
            )
        ],
    )
    conn.execute("DELETE FROM message WHERE folder_id = ?", (folder_id,))
    conn.execute("DELETE FROM expunged WHERE folder_id = ?", (folder_id,))
    conn.execute("DELETE FROM folder_chunk WHERE folder_id = ?", (folder_id,))
    conn.execute("DELETE FROM folder WHERE id = ?", (folder_id,))
