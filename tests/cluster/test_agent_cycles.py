"""The node agent's run loop (`run_cycles`): when a cycle runs again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from clustermail.cluster.agent import run_cycles

#: Longer than any test may take: a test that waits for it has failed.
NEVER = 3600.0
#: Bound on every test.
WAIT = 10.0


class Cycle:
    """A cycle that counts its runs and does ``during(n)`` in the n-th."""

    def __init__(self, during: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.runs = 0
        self.during = during

    async def __call__(self) -> None:
        self.runs += 1
        if self.during is not None:
            await self.during(self.runs)


async def test_a_change_seen_while_a_cycle_runs_starts_the_next_cycle_at_once() -> None:
    # The leader's own placement lands while its cycle is still writing the log line:
    # the watch sets the event mid-cycle. Cleared after the cycle, it was lost and the
    # agent took the virtual server it had just placed on itself an idle period later.
    wake = asyncio.Event()

    async def first_hears_its_own_write(run: int) -> None:
        if run == 1:
            await asyncio.sleep(0)  # the cycle awaits the store...
            wake.set()  # ...and the watch hears of its write meanwhile

    cycle = Cycle(first_hears_its_own_write)
    async with asyncio.timeout(WAIT):
        await run_cycles(cycle, wake, until=lambda: cycle.runs >= 2, idle=NEVER)
    assert cycle.runs == 2


async def test_without_changes_a_cycle_runs_every_idle_period_until_told_to_stop() -> None:
    cycle = Cycle()
    async with asyncio.timeout(WAIT):
        await run_cycles(cycle, asyncio.Event(), until=lambda: cycle.runs >= 3, idle=0.01)
    assert cycle.runs == 3
    await run_cycles(cycle, asyncio.Event(), until=lambda: True)
    assert cycle.runs == 3  # nothing runs once ``until`` holds


async def test_the_loop_ends_after_the_cycle_that_makes_until_hold() -> None:
    # The agent's last virtual server released while it stops: no idle wait after it.
    cycle = Cycle()
    async with asyncio.timeout(WAIT):
        await run_cycles(cycle, asyncio.Event(), until=lambda: cycle.runs >= 1, idle=NEVER)
    assert cycle.runs == 1
