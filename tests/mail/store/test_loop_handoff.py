"""Results of writer jobs reach the event loop through one handoff: in order, with their
exceptions, one wake-up for a burst, and a cancelled waiter's job never runs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store.loop_handoff import LoopHandoff, wait


def test_results_and_errors_arrive_in_order_with_few_wakeups() -> None:
    async def main() -> tuple[list[int | BaseException], int]:
        loop = asyncio.get_running_loop()
        futures: list[Future[int]] = [Future() for _ in range(50)]
        for fut in futures:
            fut.set_running_or_notify_cancel()
        waiters = [asyncio.ensure_future(wait(fut)) for fut in futures]
        await asyncio.sleep(0)  # every waiter is waiting
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args: object, **kwargs: object) -> asyncio.Handle:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:

            def resolve() -> None:  # as the writer does after a commit: all at once
                for n, fut in enumerate(futures):
                    if n == 7:
                        fut.set_exception(ValueError("job 7"))
                    else:
                        fut.set_result(n)

            thread = threading.Thread(target=resolve)
            thread.start()
            thread.join()
            got = await asyncio.gather(*waiters, return_exceptions=True)
        finally:
            del loop.call_soon_threadsafe
        return got, wakeups

    got, wakeups = asyncio.run(main())
    assert got[:7] == list(range(7)) and got[8:] == list(range(8, 50))
    assert isinstance(got[7], ValueError)
    assert wakeups == 1


def test_one_handoff_per_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert LoopHandoff.of(loop) is LoopHandoff.of(loop)

    asyncio.run(main())


def test_cancelled_waiter_cancels_a_job_not_started(tmp_path: Path) -> None:
    db = MailboxDatabase(tmp_path / "db.sqlite")
    db.mount(1)
    db.create_mailbox_sync("u")
    ran: list[str] = []
    gate, started = threading.Event(), threading.Event()

    def slow(tx: object) -> None:
        started.set()
        gate.wait(10)

    async def main() -> None:
        blocker = db._submit(slow)  # holds the writer: the next job waits in the queue
        assert await asyncio.to_thread(started.wait, 10)
        waiter = asyncio.ensure_future(db._async(lambda tx: ran.append("ran")))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.set()
        await asyncio.wrap_future(blocker)
        await db._async(lambda tx: None)  # the writer has taken everything queued

    try:
        asyncio.run(main())
    finally:
        gate.set()
        db.dismount()
    assert ran == []
