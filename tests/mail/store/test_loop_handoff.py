"""Results of writer jobs reach the event loop through one handoff: in order, one wake-up
for a burst, and a cancelled waiter's job never runs."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from clustermail.mail.store import MailboxDatabase
from clustermail.mail.store.loop_handoff import LoopHandoff


def test_posts_from_a_thread_run_in_order_with_one_wakeup() -> None:
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        handoff = LoopHandoff.of(loop)
        ran: list[int] = []
        done = asyncio.Event()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args: object, **kwargs: object) -> asyncio.Handle:
            nonlocal wakeups
            wakeups += 1
            return original(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:

            def post_all() -> None:  # as the writer does after a commit: all at once
                for n in range(50):
                    handoff.post(lambda n=n: ran.append(n))  # type: ignore[misc]
                handoff.post(done.set)

            thread = threading.Thread(target=post_all)
            thread.start()
            thread.join()
            async with asyncio.timeout(10):
                await done.wait()
        finally:
            del loop.call_soon_threadsafe
        return ran, wakeups

    ran, wakeups = asyncio.run(main())
    assert ran == list(range(50))
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
