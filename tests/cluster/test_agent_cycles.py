"""The node agent's run loop (`run_cycles`): when a cycle runs again."""

from __future__ import annotations

import asyncio

from clustermail.cluster.agent import run_cycles

#: Longer than any test may take: a test that waits for it has failed.
NEVER = 3600.0
#: Bound on every test.
WAIT = 10.0


async def test_a_change_seen_while_a_cycle_runs_starts_the_next_cycle_at_once() -> None:
    # The leader's own placement lands while its cycle is still writing the log line:
    # the watch sets the event mid-cycle. Cleared after the cycle, it was lost and the
    # agent took the virtual server it had just placed on itself an idle period later.
    wake = asyncio.Event()
    runs = 0

    async def cycle() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await asyncio.sleep(0)  # the cycle awaits the store...
            wake.set()  # ...and the watch hears of its write meanwhile
            await asyncio.sleep(0)
        else:
            wake.set()  # done: as the agent's last release does when it stops

    async with asyncio.timeout(WAIT):
        await run_cycles(cycle, wake, until=lambda: runs >= 2, idle=NEVER)
    assert runs == 2


async def test_without_changes_a_cycle_runs_every_idle_period_until_told_to_stop() -> None:
    wake = asyncio.Event()
    runs = 0

    async def cycle() -> None:
        nonlocal runs
        runs += 1

    async with asyncio.timeout(WAIT):
        await run_cycles(cycle, wake, until=lambda: runs >= 3, idle=0.01)
    assert runs == 3
    await run_cycles(cycle, wake, until=lambda: True)
    assert runs == 3  # nothing runs once ``until`` holds
