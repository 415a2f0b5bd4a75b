"""Group commit: one writer thread per mounted database runs every write.

Callers (asyncio or threads) queue a job and wait on a future. Jobs with a ``prepare`` step
(MIME analysis of a delivery) pass a preparer thread first, so that CPU work overlaps the
writer's fsync of the previous batch (sqlite3 releases the GIL while it syncs). The writer
takes everything queued, runs each job in its own SAVEPOINT (see ``_apply``) inside one
``BEGIN IMMEDIATE`` transaction that first checks the fencing epoch, commits once (one WAL
fsync under ``synchronous=FULL``) and only then resolves the futures. A job that raises is
rolled back alone; a failed epoch check or commit fails the whole batch and nothing of it is
written.

Durability by kind of batch: a batch of flag changes only (jobs submitted with
``durable=False``) is committed without an fsync of its own: atomic and in order, it survives
a crash of the process, and only a power cut or OS crash may lose the last such changes. The
next durable batch's fsync or, at the latest ``FLUSH_AFTER`` seconds after the first of
them, an fsync of its own make them durable (and the writer's close, before the final
checkpoint). Without a transaction log the connection switches to ``synchronous=NORMAL``
for such a batch (SQLite then fsyncs the WAL at the next ``FULL`` commit or checkpoint) and
the writer fsyncs the WAL file itself when the flush is due; with one, the batch's log
record is written without fsync (see :meth:`Journal.ship`). Every other batch (deliveries,
APPEND, EXPUNGE, COPY, ...) is fsynced before any of its callers is answered.

Job groups: jobs submitted with the same ``group`` that follow each other in a batch may
leave writes for the next one to extend (:attr:`Tx.pending`): a run of one-message flag
changes of one folder writes its index chunks and the folder's HIGHESTMODSEQ once, not once
per change. The writer writes what is pending outside any job's savepoint, before a job of
another group, after a job that failed and before COMMIT, so every other job reads the
folder as written, a failed job's rollback never takes another job's writes with it, and a
commit holds them all; a failure there fails the whole batch, as a failed COMMIT does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from clustermail.mail.store.errors import (
    CommitError,
    FencedError,
    NotMountedError,
    StoreError,
    from_sqlite,
)
from clustermail.mail.store.loop_handoff import LoopHandoff

if TYPE_CHECKING:
    from clustermail.mail.store.translog.journal import Journal

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH_JOBS = 1000
MAX_BATCH_BYTES = 64 * 1024 * 1024
#: Longest a committed flag change stays without fsync (one more fsync per this interval
#: at most, however many flag changes it carries).
FLUSH_AFTER = 0.2
#: Around the writer's own checkpoint (once per few MB written), the longest it waits in
#: all for reads under way to end their snapshots (see ``readers``).
READER_WAIT = 0.005


@dataclass
class Tx:
    """What a job sees: the writer's connection inside the open transaction."""

    conn: sqlite3.Connection
    now: float
    touched: set[str] = field(default_factory=set)  # mailboxes changed (for listeners)
    #: run once the transaction is committed (and logged), before anyone is answered;
    #: a job that fails takes its own back
    committed: list[Callable[[], None]] = field(default_factory=list)
    #: what a job read or wrote, for the next job of the transaction to reuse; its owner
    #: proves it still true (e.g. ``conn.total_changes`` unchanged since: no write at all,
    #: not even a rolled-back one, came in between)
    memo: dict[object, Any] = field(default_factory=dict)
    #: the group (see ``submit``) of the job after this one in the batch, None if none
    next_group: object | None = None
    #: writes a job of ``group`` left for the next job of its group to extend: (group,
    #: write them). The writer writes them, outside any job's savepoint, once the next job
    #: is of another group or after a job that failed, and before COMMIT; a failure there
    #: fails the whole batch. A job sets this only as its last step (after its last
    #: statement succeeded), so a job that fails never leaves any.
    pending: tuple[object, Callable[[], None]] | None = None


@dataclass(eq=False)
class _Job(Generic[T]):
    apply: Callable[[Tx], T]
    prepare: Callable[[], None] | None
    size: int
    durable: bool = True  # False: a flag change, committed without its own fsync
    group: object | None = None  # see submit
    #: submit: the future a thread waits on (None for submit_async's jobs)
    future: Future[T] | None = None
    started: bool = False  # set running by the preparer
    #: submit_async: the caller's loop and the future it awaits, resolved on that loop
    #: from ``outcome`` (no thread-safe future in between: its lock and condition cost
    #: more than the rest of the hand-off)
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[T] | None = None
    outcome: tuple[bool, Any] | None = None  # (ok, value or exception)

    def start(self) -> bool:
        """In the preparer or writer thread: False when the caller cancelled the job
        before it started (it never runs), else it is running from now on."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        assert self.waiter is not None
        # Read across threads: the loop sets the state under the GIL; a cancellation just
        # after this look comes too late, as with a running thread job.
        return not self.waiter.cancelled()

    def resolve(self, ok: bool, value: Any) -> None:
        if self.future is None:
            self.outcome = (ok, value)
        elif ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)


@dataclass
class WriterStats:
    commits: int = 0  # transactions committed
    jobs: int = 0  # jobs committed
    largest_batch: int = 0
    relaxed_commits: int = 0  # batches of flag changes only, committed without fsync
    flushes: int = 0  # fsyncs that made such batches durable after the fact


class GroupCommitWriter:
    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        epoch: int,
        on_commit: Callable[[set[str]], None] | None = None,
        clock: Callable[[], float] = time.time,
        #: after each commit, before the answers: (bytes of its jobs, whether it held flag
        #: changes only, every commit hook run); True asks for the writer's checkpoint
        after_commit: Callable[[int, bool], bool] | None = None,
        journal: Journal | None = None,
        #: ends the database's readers' held snapshots (see ``readers``): before each write
        #: transaction begins, so it can restart a checkpointed WAL, and after the writer's
        #: own checkpoint, so readers move off the WAL frames it copied
        release_readers: Callable[[float], None] | None = None,
    ) -> None:
        self._conn = conn
        self._release_readers = release_readers
        self._path = path
        self._epoch = epoch
        self._on_commit = on_commit
        self._after_commit = after_commit
        self._clock = clock
        self._journal = journal
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._to_prepare: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._closed = False
        self._busy = False
        self._lock = threading.Lock()
        #: monotonic time of the first committed change not yet fsynced (None: all are)
        self._unsynced_since: float | None = None
        self._synchronous = "FULL"  # the connection's setting without a journal
        self._wal_fd: int | None = None
        self.fenced: FencedError | None = None
        #: A committed change that could not be logged: no more writes (see translog).
        self.broken: StoreError | None = None
        self.stats = WriterStats()
        self._thread = threading.Thread(target=self._run, name=f"writer:{path.name}", daemon=True)
        self._preparer = threading.Thread(
            target=self._prepare_loop, name=f"preparer:{path.name}", daemon=True
        )
        self._thread.start()
        self._preparer.start()

    def submit(
        self,
        apply: Callable[[Tx], T],
        *,
        prepare: Callable[[], None] | None = None,
        size: int = 0,
        durable: bool = True,
        group: object | None = None,
    ) -> Future[T]:
        """Queue a job. ``durable=False`` only for flag changes: answered after the commit but
        before its fsync (see the module's docstring); ``after_commit`` reports a batch of
        such jobs as flag changes alone, which the database's readers rely on (each of its
        flag changes is in the flag log: ``MailboxDatabase.flag_changes_since``).
        ``group``: jobs of one group that follow each other in a batch may leave writes
        for the next one to extend (:attr:`Tx.pending`: one write of a folder's row for
        ten flag changes, not ten)."""
        future: Future[T] = Future()
        self._enqueue(_Job(apply, prepare, size, durable, group, future=future))
        return future

    def submit_async(
        self,
        apply: Callable[[Tx], T],
        *,
        prepare: Callable[[], None] | None = None,
        size: int = 0,
        durable: bool = True,
        group: object | None = None,
    ) -> asyncio.Future[T]:
        """:meth:`submit` for a caller on an event loop. Unlike ``asyncio.wrap_future`` of
        each job's future, the writer wakes each loop once per batch for all of its jobs
        (one ``call_soon_threadsafe``, i.e. one self-pipe write, not one per job).
        Cancelling the returned future before the job started means it never runs."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._enqueue(_Job(apply, prepare, size, durable, group, loop=loop, waiter=waiter))
        return waiter

    def _enqueue(self, job: _Job[Any]) -> None:
        with self._lock:
            if self._closed:
                raise NotMountedError(self._path)
            if self.fenced is not None:
                raise self.fenced
            if self.broken is not None:
                raise self.broken
            # The preparer thread only pays off while the writer is busy (then the analysis
            # overlaps its fsync); an idle writer prepares the job itself, saving a hand-off.
            (self._to_prepare if job.prepare is not None and self._busy else self._queue).put(job)

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._to_prepare.put(None)  # the preparer forwards its jobs, then stops the writer
        self._preparer.join()
        self._thread.join()

    # ------------------------------------------------------------------- writer thread

    @staticmethod
    def _settle(outcomes: list[tuple[_Job[Any], bool, Any]]) -> None:
        """Resolve the jobs' futures, then wake each waiting event loop once for all of its
        jobs (see submit_async)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
        for job, ok, value in outcomes:
            job.resolve(ok, value)
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # The loop's handoff, which commit notifications take too (ChangeHub): they
            # arrive after the answers of their batch. A closed loop drops them.
            LoopHandoff.of(loop).post(functools.partial(_copy_outcomes, jobs))

    def _prepare_loop(self) -> None:
        while (job := self._to_prepare.get()) is not None:
            if not job.start():
                continue  # cancelled before it started: never runs
            assert job.prepare is not None
            try:
                job.prepare()
            except BaseException as exc:
                self._settle([(job, False, exc)])  # handed to the caller
                continue
            job.started = True
            self._queue.put(job)
        self._queue.put(None)

    def _run(self) -> None:
        stop = False
        while not stop:
            since = self._unsynced_since
            wait = None if since is None else max(0.0, since + FLUSH_AFTER - time.monotonic())
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                self._flush()
                continue
            if first is None:
                break
            batch, size = [first], first.size
            while len(batch) < MAX_BATCH_JOBS and size < MAX_BATCH_BYTES:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
                size += job.size
            self._run_batch(batch)
            since = self._unsynced_since
            if since is not None and time.monotonic() - since >= FLUSH_AFTER:
                self._flush()
        self._flush()  # before the dismount's checkpoint
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    def _flush(self) -> None:
        """Fsync the committed flag changes not yet fsynced."""
        if self._unsynced_since is None:
            return
        self._unsynced_since = None
        try:
            if self._journal is not None:
                self._journal.flush()
            else:
                if self._wal_fd is None:
                    self._wal_fd = os.open(f"{self._path}-wal", os.O_RDONLY)
                os.fdatasync(self._wal_fd)
        except BaseException as exc:  # committed, answered, and maybe not durable
            log.exception("cannot fsync committed flag changes of %s", self._path)
            with self._lock:
                self.broken = exc if isinstance(exc, StoreError) else self._wrap(exc)
            return
        self.stats.flushes += 1

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        self._busy = True
        try:
            self._run_ready(self._start(batch))
        finally:
            self._busy = False

    def _start(self, batch: list[_Job[Any]]) -> list[_Job[Any]]:
        """The jobs that still run: not cancelled, and prepared (here if the preparer did not)."""
        ready: list[_Job[Any]] = []
        for job in batch:
            if job.started:
                ready.append(job)
                continue
            if not job.start():
                continue  # cancelled before it started: never runs
            if job.prepare is not None:
                try:
                    job.prepare()
                except BaseException as exc:
                    self._settle([(job, False, exc)])  # handed to the caller
                    continue
            ready.append(job)
        return ready

    def _run_ready(self, ready: list[_Job[Any]]) -> None:
        if not ready:
            return
        tx = Tx(self._conn, self._clock())
        results: list[tuple[_Job[Any], bool, Any]] = []
        journal = self._journal
        committed = False
        relaxed = not any(job.durable for job in ready)
        wrote = journal is not None  # its stamp writes in every transaction
        try:
            if journal is not None:
                journal.acquire()  # held until the commit is in the log (see translog)
            else:
                self._set_synchronous("NORMAL" if relaxed else "FULL")
            self._begin_write()
            kept = False  # a job of this transaction succeeded: later ones need a savepoint
            last = len(ready) - 1
            for i, job in enumerate(ready):
                tx.next_group = ready[i + 1].group if i < last else None
                changes = self._conn.total_changes
                results.append(result := self._apply(tx, job, savepoint=kept))
                kept = kept or result[1]
                pending = tx.pending
                if pending is not None and (not result[1] or tx.next_group != pending[0]):
                    tx.pending = None
                    pending[1]()  # raises: the whole batch fails
                wrote = wrote or (result[1] and self._conn.total_changes != changes)
            if journal is not None:
                journal.stamp(self._conn)
            self._conn.execute("COMMIT")
            committed = True
            if journal is not None:
                # durable in the log before anyone is answered (flag changes: see _flush)
                journal.ship(tx.now, sync=not relaxed)
        except BaseException as exc:
            if committed:  # in the database but not in its log: stop taking writes
                self.broken = exc if isinstance(exc, StoreError) else self._wrap(exc)
                self._committed_unlogged(tx, ready)
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed on %s", self._path)
            error = exc if isinstance(exc, StoreError) else self._wrap(exc)
            self._settle([(job, False, error) for job in ready])
            return
        finally:
            if journal is not None:
                journal.release()
        flag_only = relaxed  # what after_commit is told: flag changes, every hook run
        for hook in tx.committed:
            try:
                hook()
            except Exception:
                log.exception("commit hook failed")
                flag_only = False
        if wrote:  # the commit wrote WAL frames (and log records)
            if not relaxed:
                self._unsynced_since = None  # its fsync covered every earlier change too
            elif self._unsynced_since is None:
                self._unsynced_since = time.monotonic()
        if relaxed:
            self.stats.relaxed_commits += 1
        self.stats.commits += 1
        self.stats.jobs += len(ready)
        self.stats.largest_batch = max(self.stats.largest_batch, len(ready))
        finish = self._after_commit is not None and self._after_commit(
            sum(job.size for job in ready), flag_only)
        self._settle(results)
        if finish:
            self._finish_checkpoint()
        if self._on_commit is not None and tx.touched:
            try:
                self._on_commit(tx.touched)
            except Exception:
                log.exception("commit listener failed")

    def _committed_unlogged(self, tx: Tx, ready: list[_Job[Any]]) -> None:
        """A commit its log lost (its callers get the error): the change is in the
        database all the same, so its readers are told as for any commit — counted as not
        only flag changes (its hooks, the flag log's records, do not run: readers ask the
        database) and its mailboxes' listeners woken."""
        try:
            if self._after_commit is not None:
                self._after_commit(sum(job.size for job in ready), False)
            if self._on_commit is not None and tx.touched:
                self._on_commit(tx.touched)
        except Exception:
            log.exception("telling readers of an unlogged commit failed")

    def _wrap(self, exc: BaseException) -> StoreError:
        if isinstance(exc, sqlite3.Error):
            return from_sqlite(self._path, exc)
        return CommitError(f"{self._path}: transaction failed: {exc!r}")

    def _finish_checkpoint(self) -> None:
        """Copies the frames committed since the background checkpoint's round, here,
        between two transactions, so the next one restarts the WAL (checkpoint.py). After
        answering: the commits it follows do not wait for it."""
        release = self._release_readers
        if release is not None:
            release(READER_WAIT)  # a snapshot before the last commit would stop the copy short
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            log.exception("checkpoint of %s failed", self._path)
        if release is not None:
            release(READER_WAIT)  # off the copied frames: the next write restarts the WAL

    def _set_synchronous(self, mode: str) -> None:
        if mode != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous = {mode}")
            self._synchronous = mode

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, then the fencing check inside the same transaction: after a newer
        owner recorded its epoch, this owner can write nothing (safety rule 1)."""
        self._conn.execute("BEGIN IMMEDIATE")
        row = self._conn.execute("SELECT epoch FROM mount WHERE id = 1").fetchone()
        current = -1 if row is None else int(row[0])
        if current != self._epoch:
            self.fenced = FencedError(self._path, self._epoch, current)
            raise self.fenced

    def _begin_write(self) -> None:
        if self._release_readers is not None:
            self._release_readers(0.0)
        self._begin()
        if self._journal is not None:
            self._journal.before_write()

    def _apply(
        self, tx: Tx, job: _Job[Any], *, savepoint: bool
    ) -> tuple[_Job[Any], bool, Any]:
        """Run one job; if it raises, undo it alone. Jobs after the first that succeeded run
        in a SAVEPOINT; one before it has nothing to keep, so it runs bare and a failure
        rolls the whole transaction back and begins it again (the fencing check included):
        two statements fewer for the common batch, e.g. a single delivery's."""
        conn = self._conn
        hooks = len(tx.committed)
        if savepoint:
            conn.execute("SAVEPOINT job")
        try:
            value = job.apply(tx)
        except Exception as exc:
            del tx.committed[hooks:]
            if savepoint:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            else:
                if conn.in_transaction:  # some errors (SQLITE_FULL, ...) already ended it
                    conn.execute("ROLLBACK")
                self._begin_write()
            if isinstance(exc, sqlite3.Error):
                exc = from_sqlite(self._path, exc)
            return job, False, exc
        if savepoint:
            conn.execute("RELEASE job")
        return job, True, value


def _copy_outcomes(jobs: list[_Job[Any]]) -> None:
    """On the caller's loop: hand each job's outcome to the future its caller awaits."""
    for job in jobs:
        waiter, outcome = job.waiter, job.outcome
        if waiter is None or outcome is None or waiter.done():
            continue  # cancelled while it ran: the outcome is dropped
        if outcome[0]:
            waiter.set_result(outcome[1])
        else:
            waiter.set_exception(outcome[1])
