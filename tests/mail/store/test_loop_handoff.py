"""Results of writer jobs reach the event loop through one handoff: in order, one wake-up
for a burst (a cancelled waiter's job: tests/mail/store/test_writer_batches.py)."""

from __future__ import annotations

import asyncio
import threading

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
