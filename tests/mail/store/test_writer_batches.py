"""The group-commit writer's per-job isolation and result hand-off, on a real SQLite file:
a failing job is undone alone wherever it sits in a batch (the first job runs without a
savepoint), the fencing check still guards a transaction begun again after such a failure,
and asyncio callers get their own outcome whether or not they share a batch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from clustermail.mail.store import schema
from clustermail.mail.store.errors import StoreError
from clustermail.mail.store.writer import GroupCommitWriter, Tx

TIMEOUT = 10.0


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[GroupCommitWriter, sqlite3.Connection]]:
    path = tmp_path / "w.sqlite"
    conn = schema.connect(path, create=True)
    conn.execute("INSERT INTO mount (id, epoch, mounted_at, owner) VALUES (1, 1, 0, 't')")
    conn.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    w = GroupCommitWriter(conn, path, 1)
    yield w, conn
    w.close()
    conn.close()


def put(x: int) -> Callable[[Tx], int]:
    def apply(tx: Tx) -> int:
        tx.conn.execute("INSERT INTO t VALUES (?)", (x,))
        return x

    return apply


def put_then_fail(x: int) -> Callable[[Tx], int]:
    """Writes, then raises: its write must not survive."""

    def apply(tx: Tx) -> int:
        tx.conn.execute("INSERT INTO t VALUES (?)", (x,))
        raise ValueError(f"job {x} fails")

    return apply


def rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as other:
        return [r[0] for r in other.execute("SELECT x FROM t ORDER BY x")]


def one_batch(w: GroupCommitWriter, applies: list[Callable[[Tx], Any]]) -> list[Future[Any]]:
    """Queue ``applies`` while the writer is held inside a job, so they form one batch."""
    entered, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        assert release.wait(TIMEOUT)

    holder = w.submit(hold)
    assert entered.wait(TIMEOUT)
    futures = [w.submit(apply) for apply in applies]
    release.set()
    holder.result(TIMEOUT)
    return futures


@pytest.mark.parametrize("failing", [0, 1, 3])
def test_a_failing_job_is_undone_alone_wherever_it_is_in_the_batch(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path, failing: int
) -> None:
    w, _ = writer
    applies = [put_then_fail(x) if x == failing else put(x) for x in range(4)]
    futures = one_batch(w, applies)
    for x, future in enumerate(futures):
        if x == failing:
            with pytest.raises(ValueError, match=f"job {x} fails"):
                future.result(TIMEOUT)
        else:
            assert future.result(TIMEOUT) == x
    assert w.stats.largest_batch == 4  # the four jobs shared one transaction
    assert rows(tmp_path / "w.sqlite") == [x for x in range(4) if x != failing]


def test_consecutive_failures_before_any_success_each_undone_alone(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path
) -> None:
    w, _ = writer
    futures = one_batch(w, [put_then_fail(0), put_then_fail(1), put(2), put_then_fail(3), put(4)])
    outcomes = [f.exception(TIMEOUT) is None for f in futures]
    assert outcomes == [False, False, True, False, True]
    assert rows(tmp_path / "w.sqlite") == [2, 4]


def test_a_constraint_error_in_the_first_job_leaves_the_rest_of_the_batch(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path
) -> None:
    w, _ = writer
    w.submit(put(7)).result(TIMEOUT)
    futures = one_batch(w, [put(7), put(8)])  # the first violates UNIQUE
    assert futures[0].exception(TIMEOUT) is not None
    assert futures[1].result(TIMEOUT) == 8
    assert rows(tmp_path / "w.sqlite") == [7, 8]


def test_the_transaction_begun_again_after_a_failure_checks_the_epoch(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path
) -> None:
    """The first job of a batch runs without a savepoint: when it fails, the transaction is
    rolled back and begun again, and the new one checks the fencing epoch before any other
    job writes (traced on the writer's connection)."""
    w, conn = writer
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        one_batch(w, [put_then_fail(0), put(1)])[1].result(TIMEOUT)
    finally:
        conn.set_trace_callback(None)
    failed = statements.index("INSERT INTO t VALUES (0)")
    after = statements[failed + 1 :]
    assert after[:3] == ["ROLLBACK", "BEGIN IMMEDIATE", "SELECT epoch FROM mount WHERE id = 1"]
    assert after.index("INSERT INTO t VALUES (1)") > 2
    assert rows(tmp_path / "w.sqlite") == [1]


async def hold_writer(w: GroupCommitWriter) -> tuple[asyncio.Future[None], threading.Event]:
    """A job that holds the writer until ``release`` is set, once it runs: what is
    submitted meanwhile waits in the queue and goes in the next batch together."""
    entered, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        assert release.wait(TIMEOUT)

    holder = w.submit_async(hold)
    await asyncio.wait_for(asyncio.to_thread(entered.wait, TIMEOUT), TIMEOUT)
    return holder, release


async def test_async_callers_sharing_a_batch_each_get_their_own_outcome(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path
) -> None:
    w, _ = writer
    holder, release = await hold_writer(w)
    waiters = [w.submit_async(put_then_fail(x) if x % 3 == 0 else put(x)) for x in range(10)]
    release.set()
    await asyncio.wait_for(holder, TIMEOUT)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*waiters, return_exceptions=True), TIMEOUT
    )
    for x, outcome in enumerate(outcomes):
        if x % 3 == 0:
            assert isinstance(outcome, ValueError) and f"job {x}" in str(outcome)
        else:
            assert outcome == x
    assert w.stats.largest_batch >= 10
    assert rows(tmp_path / "w.sqlite") == [x for x in range(10) if x % 3]


async def test_an_async_job_cancelled_before_it_started_never_runs(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path
) -> None:
    w, _ = writer
    holder, release = await hold_writer(w)
    cancelled, kept = w.submit_async(put(1)), w.submit_async(put(2))
    cancelled.cancel()
    await asyncio.sleep(0)  # the cancellation reaches the job's own future
    release.set()
    await asyncio.wait_for(holder, TIMEOUT)
    assert await asyncio.wait_for(kept, TIMEOUT) == 2
    assert cancelled.cancelled()
    assert rows(tmp_path / "w.sqlite") == [2]


def deferred(x: int) -> Callable[[Tx], int]:
    """A job of group "g" that leaves its row for a pending write (Tx.pending), valid while
    nothing else wrote, as the store's run of one-message flag changes does."""

    def apply(tx: Tx) -> int:
        memo = tx.memo.get("g")
        if memo is None or memo[0] != tx.conn.total_changes:
            assert tx.pending is None  # the writer wrote what was pending first
            memo = tx.memo["g"] = [tx.conn.total_changes, []]
        memo[1].append(x)

        def write() -> None:
            tx.conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in memo[1]])
            memo[1].clear()

        tx.pending = ("g", write)
        return x

    return apply


def test_pending_writes_land_before_other_jobs_after_failures_and_before_commit(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path
) -> None:
    w, _ = writer
    entered, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        entered.set()
        assert release.wait(TIMEOUT)

    def later_sees(x: int) -> Callable[[Tx], int]:
        def apply(tx: Tx) -> int:  # another job reads what the group's jobs wrote
            got = [r[0] for r in tx.conn.execute("SELECT x FROM t ORDER BY x")]
            tx.conn.execute("INSERT INTO t VALUES (?)", (x,))
            return len(got)

        return apply

    holder = w.submit(hold)
    assert entered.wait(TIMEOUT)
    futures = [
        w.submit(deferred(1), group="g"),
        w.submit(deferred(2), group="g"),
        w.submit(put_then_fail(3), group="g"),  # wrote, then failed: pending written first
        w.submit(deferred(4), group="g"),
        w.submit(later_sees(100)),  # a job of no group: what is pending is written before
        w.submit(deferred(5), group="g"),
        w.submit(deferred(6), group="g"),  # the last: written before COMMIT
    ]
    release.set()
    holder.result(TIMEOUT)
    assert [f.result(TIMEOUT) for f in futures if f is not futures[2]] == [1, 2, 4, 3, 5, 6]
    with pytest.raises(ValueError):
        futures[2].result(TIMEOUT)
    assert rows(tmp_path / "w.sqlite") == [1, 2, 4, 5, 6, 100]
    assert w.stats.largest_batch >= 7


def test_a_failing_pending_write_fails_the_whole_batch(
    writer: tuple[GroupCommitWriter, sqlite3.Connection], tmp_path: Path
) -> None:
    w, _ = writer

    def duplicate(tx: Tx) -> int:  # its pending write breaks the UNIQUE constraint
        def write() -> None:
            tx.conn.executemany("INSERT INTO t VALUES (?)", [(7,), (7,)])

        tx.pending = ("g", write)
        return 7

    futures = one_batch(w, [put(1), duplicate, put(2)])
    for f in futures:
        with pytest.raises(StoreError):
            f.result(TIMEOUT)
    assert rows(tmp_path / "w.sqlite") == []
    assert w.submit(put(3)).result(TIMEOUT) == 3  # the writer goes on
