"""The group state machine in this test's event loop: no process around it, real resources."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from clustermail.cluster.host_output import EventSink, HostLog
from clustermail.cluster.host_protocol import (
    EXIT_BAD_SPEC,
    EXIT_OFFLINE,
    GroupEvent,
    GroupState,
    HostEvent,
    OfflineCommand,
    ResourceEvent,
    ResourceState,
    decode_event,
    encode_command,
    parse_spec,
)
from clustermail.cluster.resource_host import ResourceHost

WAIT = 10.0


def spec(tmp_path: Path, disk_type: str = "disk") -> dict[str, object]:
    return {
        "vs": "mail1", "node": "node1", "epoch": 3,
        "store": f"sqlite://{tmp_path}/cluster.db", "data_dir": str(tmp_path / "data"),
        "resources": [
            {"name": "ip", "type": "ip_address", "properties": {"address": "127.0.0.11"}},
            {"name": "name", "type": "network_name", "properties": {"name": "mail1"},
             "depends_on": ["ip"]},
            {"name": "disk", "type": disk_type, "properties": {"path": str(tmp_path / "d")}},
        ],
    }


class Output(io.StringIO):
    """The host's stdout, in memory, telling a waiting test when it was written to."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


class Host:
    """A ResourceHost with its events written to memory and its commands fed by hand."""

    def __init__(self, spec: dict[str, object]) -> None:
        self.out, self.err = Output(), io.StringIO()
        sink = EventSink(self.out, lambda why: None)
        self.host = ResourceHost(parse_spec(spec), sink, HostLog("mail1", "node1", sink))
        self.commands = asyncio.StreamReader()

    def events(self) -> list[HostEvent]:
        return [decode_event(line) for line in self.out.getvalue().splitlines()]

    async def wait_for(self, state: GroupState) -> None:
        async with asyncio.timeout(WAIT):
            while not any(isinstance(e, GroupEvent) and e.state is state for e in self.events()):
                self.out.written.clear()
                await self.out.written.wait()


async def test_online_in_order_then_offline_in_reverse(tmp_path: Path) -> None:
    h = Host(spec(tmp_path))
    run = asyncio.create_task(h.host.run(h.commands))
    await h.wait_for(GroupState.ONLINE)
    online = [e for e in h.events() if isinstance(e, ResourceEvent)]
    assert [(e.resource, e.state) for e in online] == [
        (name, state) for name in ("ip", "name", "disk")
        for state in (ResourceState.ONLINE_PENDING, ResourceState.ONLINE)
    ]
    # Routine steps of bringing the group online say so; the agent logs them briefly.
    assert all(e.group_step and e.reason == "bringing the group online" for e in online)

    h.commands.feed_data(encode_command(OfflineCommand()).encode())
    async with asyncio.timeout(WAIT):
        assert await run == EXIT_OFFLINE
    offline = [e for e in h.events()[len(online):] if isinstance(e, ResourceEvent)]
    assert [e.resource for e in offline if e.state is ResourceState.OFFLINE] == [
        "disk", "name", "ip"
    ]
    assert not any(e.group_step for e in offline)


async def test_an_unknown_type_rejects_the_spec(tmp_path: Path) -> None:
    h = Host(spec(tmp_path, disk_type="san_disk"))
    async with asyncio.timeout(WAIT):
        assert await h.host.run(h.commands) == EXIT_BAD_SPEC
    last = h.events()[-1]
    assert isinstance(last, GroupEvent) and last.state is GroupState.FAILED
    assert "unknown resource type 'san_disk'" in last.reason
