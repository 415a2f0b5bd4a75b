"""Resource operations that hang, in the group state machine (this test's event loop):
their pending timeouts are kept from outside them, and the host answers pings."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from clustermail.cluster.host_protocol import (
    EXIT_FAILED,
    GroupEvent,
    GroupState,
    PingCommand,
    PongEvent,
    ResourceEvent,
    ResourceState,
    encode_command,
)
from clustermail.cluster.resource_host import CANCEL_GRACE
from tests.cluster.resource_host.test_state_machine import WAIT, Host, spec
from tests.support import faulty_types
from tests.support.distributions import Distributions

POLICY = {"quick_check_interval": 0.1, "thorough_check_interval": 60.0,
          "pending_timeout": 0.3, "restart_threshold": 2, "restart_period": 60.0}


def faulty_spec(tmp_path: Path, fault: str, trigger: Path | None = None) -> dict[str, object]:
    s = spec(tmp_path)
    props: dict[str, object] = {"fault": fault}
    if trigger is not None:
        props["trigger"] = str(trigger)
    resources = s["resources"]
    assert isinstance(resources, list)
    resources.append({"name": "f", "type": "faulty", "properties": props,
                      "depends_on": ["ip"], "policy": POLICY})
    return s


async def test_a_check_that_never_answers_counts_as_failed(
    tmp_path: Path, distributions: Distributions
) -> None:
    distributions.add("faulty", faulty_types.ENTRY_POINT)
    trigger = tmp_path / "hang"
    h = Host(faulty_spec(tmp_path, "hang_check", trigger))
    run = asyncio.create_task(h.host.run(h.commands))
    await h.wait_for(GroupState.ONLINE)
    mark = len(h.events())
    trigger.touch()
    async with asyncio.timeout(WAIT):
        while True:
            changes = [(e.state, e.reason) for e in h.events()[mark:]
                       if isinstance(e, ResourceEvent) and e.resource == "f"]
            if (ResourceState.ONLINE, "restart 1 of 2 within 60 s") in changes:
                break
            h.out.written.clear()
            await h.out.written.wait()
    assert changes[0] == (ResourceState.FAILED, "quick check gave no answer within 0.3 s")
    run.cancel()


async def test_an_online_that_swallows_its_cancellation_still_times_out(
    tmp_path: Path, distributions: Distributions
) -> None:
    """The operation is given up at its pending timeout (plus the cancel grace), the
    group fails, and the failure is a start failure: the same text on every node."""
    distributions.add("faulty", faulty_types.ENTRY_POINT)
    h = Host(faulty_spec(tmp_path, "ignore_cancel_online"))
    started = time.monotonic()
    async with asyncio.timeout(WAIT):
        assert await h.host.run(h.commands) == EXIT_FAILED
    assert time.monotonic() - started < 0.3 + CANCEL_GRACE + 3
    failed = [e for e in h.events() if isinstance(e, GroupEvent)][-1]
    assert failed.state is GroupState.FAILED
    assert failed.reason == "resource f failed: online pending timeout (0.3 s) expired"
    assert failed.start_failure == "f: online pending timeout (0.3 s) expired"


async def test_a_failure_after_the_group_came_online_is_no_start_failure(
    tmp_path: Path, distributions: Distributions
) -> None:
    distributions.add("faulty", faulty_types.ENTRY_POINT)
    trigger = tmp_path / "hang"
    s = faulty_spec(tmp_path, "hang_check", trigger)
    resources = s["resources"]
    assert isinstance(resources, list)
    resources[-1]["policy"] = {**POLICY, "restart_threshold": 0}
    h = Host(s)
    run = asyncio.create_task(h.host.run(h.commands))
    await h.wait_for(GroupState.ONLINE)
    trigger.touch()
    async with asyncio.timeout(WAIT):
        assert await run == EXIT_FAILED
    failed = [e for e in h.events() if isinstance(e, GroupEvent)][-1]
    assert failed.state is GroupState.FAILED and failed.start_failure == ""


async def test_pings_are_answered_by_the_event_loop(tmp_path: Path) -> None:
    h = Host(spec(tmp_path))
    run = asyncio.create_task(h.host.run(h.commands))
    for seq in (1, 2):
        h.commands.feed_data(encode_command(PingCommand(seq)).encode())
    async with asyncio.timeout(WAIT):
        while [e.seq for e in h.events() if isinstance(e, PongEvent)] != [1, 2]:
            h.out.written.clear()
            await h.out.written.wait()
    run.cancel()
