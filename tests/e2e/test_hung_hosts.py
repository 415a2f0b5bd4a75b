"""Gray failures of resource hosts, against real node agents and resource hosts.

A host whose event loop is wedged is killed by its agent within its host_timeout
and its virtual server fails over; an agent told to stop (SIGTERM, SIGHUP,
SIGINT) while one of its hosts is wedged still exits within a bound, and gives
the virtual server up only once that host is dead; a start failure that follows
a virtual server from node to node leaves it failed after the second try
instead of burning its failover threshold. (A SIGSTOPped host: test_partition.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from clustermail.cluster import eventlog, keys
from clustermail.cluster.records import FailoverHistory, OwnerRecord
from clustermail.cluster.supervision import KILL_GRACE
from tests.e2e.harness import SEED, LocalCluster, cluster_toml, free_addresses, owners, vs_of
from tests.e2e.test_partition import alive, boottime, started_at
from tests.support import faulty_types
from tests.support.distributions import Distributions

HOST_TIMEOUT = 2.0
#: Renew interval of the default timing: how often the agent pings and looks.
PING_INTERVAL = 0.4


def faulty_resource(tmp: Path, fault: str) -> str:
    """A resource on every virtual server whose quick check (or online) wedges the
    host's event loop once the file ``wedge-mail<v>`` appears (and deletes it)."""
    return (
        "[virtual_servers.mail{v}.resources.f]\n"
        'type = "faulty"\n'
        "quick_check_interval = 0.2\n"
        "[virtual_servers.mail{v}.resources.f.properties]\n"
        f'fault = "{fault}"\n'
        f'trigger = "{tmp}/wedge-mail{{v}}"\n'
    )


def faulty_cluster(tmp: Path, distributions: Distributions,
                   host_timeout: float = HOST_TIMEOUT, fault: str = "wedge_check") -> LocalCluster:
    distributions.add("faulty", faulty_types.ENTRY_POINT)
    base, port = free_addresses()
    toml = cluster_toml(base, port, vs_extra=f"host_timeout = {host_timeout}",
                        extra_resource=faulty_resource(tmp, fault))
    return LocalCluster(tmp, f"sqlite://{tmp}/cluster.db", toml, env=distributions.env())


async def wedge(tmp: Path, vs: str) -> None:
    """Wedges ``vs``'s resource host; returns once its loop is stuck."""
    trigger = tmp / f"wedge-{vs}"
    trigger.touch()
    async with asyncio.timeout(10):
        while trigger.exists():  # the resource deletes it as it wedges
            await asyncio.sleep(0.01)


async def wait_dead(pid: int, timeout: float) -> float:
    """Waits for ``pid`` to be gone; returns when (CLOCK_BOOTTIME, an upper bound)."""
    async with asyncio.timeout(timeout):
        while alive(pid):
            await asyncio.sleep(0.005)
    return boottime()


async def hung_lines(c: LocalCluster, vs: str) -> list[str]:
    assert c.store is not None
    return [e.message for e in await eventlog.read(c.store)
            if e.event == "host_hung" and e.vs == vs]


async def test_a_wedged_event_loop_is_killed_and_its_virtual_server_fails_over(
    tmp_path: Path, distributions: Distributions
) -> None:
    async with faulty_cluster(tmp_path, distributions) as c:
        c.start_all()
        status = await c.wait_for(lambda s: owners(s) == SEED, timeout=60,
                                  what="the initial layout")
        host = vs_of(status, "mail2")["pid"]

        await wedge(tmp_path, "mail2")
        wedged_at = boottime()
        dead_at = await wait_dead(host, 30)
        # Silent for host_timeout, seen within a ping interval, SIGTERM ignored for the
        # kill grace; slack for a loaded machine (the agent's own stalls do not count).
        assert dead_at - wedged_at < HOST_TIMEOUT + PING_INTERVAL + KILL_GRACE + 3

        # node2's agent runs on (wait_for checks that it is alive).
        status = await c.wait_for(lambda s: owners(s)["mail2"] not in (None, "node2"),
                                  what="mail2 online on another node")
        assert started_at(vs_of(status, "mail2")["resource_pids"]["banner"]) > dead_at
        lines = await hung_lines(c, "mail2")
        assert len(lines) == 1
        assert re.fullmatch(rf"mail2: resource host {host} did not answer for \d+\.\d s; killed",
                            lines[0]), lines


async def test_a_host_wedged_in_its_first_online_is_killed_within_its_timeout(
    tmp_path: Path, distributions: Distributions
) -> None:
    """The host answers the ping sent with its spec before any resource runs, so the
    allowance for a slow start does not apply: host_timeout does."""
    async with faulty_cluster(tmp_path, distributions, fault="wedge_online") as c:
        (tmp_path / "wedge-mail2").touch()
        c.start_all()
        status = await c.wait_for(lambda s: owners(s)["mail2"] not in (None, "node2"),
                                  timeout=60, what="mail2 online elsewhere after its host "
                                  "wedged on node2")
        lines = await hung_lines(c, "mail2")
        assert len(lines) == 1, lines
        match = re.fullmatch(r"mail2: resource host \d+ did not answer for (\d+\.\d) s "
                             r"while starting; killed", lines[0])
        assert match is not None, lines
        # Seen at the first look past host_timeout: a ping interval later, two if that
        # look came late (a later one excuses the agent's stall instead).
        assert float(match.group(1)) < HOST_TIMEOUT + 2 * PING_INTERVAL + 0.2
        assert vs_of(status, "mail2")["state"] == "online"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
async def test_an_agent_with_a_wedged_host_still_stops(
    tmp_path: Path, distributions: Distributions, sig: signal.Signals
) -> None:
    async with faulty_cluster(tmp_path, distributions) as c:
        c.start_all()
        status = await c.wait_for(lambda s: owners(s) == SEED, timeout=60,
                                  what="the initial layout")
        host = vs_of(status, "mail3")["pid"]
        agent = c.procs["node3"]
        assert c.store is not None

        await wedge(tmp_path, "mail3")
        c.expected_exits.add("node3")
        agent.send_signal(sig)
        started = time.monotonic()
        # Until the agent exits: ownership of mail3 must not leave node3 while its
        # host lives (read the key, then look at the host: alive then means alive
        # while the key was already gone).
        while agent.poll() is None:
            assert time.monotonic() - started < HOST_TIMEOUT + KILL_GRACE + 8, \
                "the agent did not stop"
            kv = await c.store.get(keys.OWNER + "mail3")
            held = kv is not None and OwnerRecord.from_store(kv.key, kv.value).node == "node3"
            if not held:
                assert not alive(host), "mail3 was given up while its resource host lived"
            await asyncio.sleep(0.005)
        assert agent.returncode == 0
        assert not alive(host)
        lines = await hung_lines(c, "mail3")
        assert lines and lines[0].startswith(f"mail3: resource host {host} did not answer for")
        await c.wait_for(lambda s: owners(s)["mail3"] not in (None, "node3"),
                         what="mail3 online on another node")


async def test_the_same_signal_twice_kills_the_hosts_at_once(
    tmp_path: Path, distributions: Distributions
) -> None:
    """With a long host_timeout a wedged host would hold the stop for a minute; a
    second Ctrl-C does not wait for it."""
    async with faulty_cluster(tmp_path, distributions, host_timeout=60.0) as c:
        c.start_all()
        status = await c.wait_for(lambda s: owners(s) == SEED, timeout=60,
                                  what="the initial layout")
        host = vs_of(status, "mail3")["pid"]
        agent = c.procs["node3"]
        await wedge(tmp_path, "mail3")
        c.expected_exits.add("node3")
        agent.send_signal(signal.SIGINT)
        await asyncio.sleep(1.0)
        assert agent.poll() is None and alive(host)  # waiting for the wedged host
        agent.send_signal(signal.SIGINT)
        started = time.monotonic()
        while agent.poll() is None:
            assert time.monotonic() - started < 8, "the agent did not stop"
            await asyncio.sleep(0.01)
        assert agent.returncode == 0 and not alive(host)
        await c.wait_for(lambda s: owners(s)["mail3"] not in (None, "node3"),
                         what="mail3 online on another node")


async def test_a_start_failure_that_follows_the_virtual_server_leaves_it_failed(
    tmp_path: Path,
) -> None:
    """A stray process holds mail1's port on its address: mail1 fails to start on node1,
    then the same way on node4, and is left failed with that reason (one failure of
    the group, not one per node) until the port is free and its failures cleared."""
    base, port = free_addresses()
    address = f"{base}.11"
    stray = socket.socket()
    stray.bind((address, port))
    stray.listen()
    try:
        async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db",
                                cluster_toml(base, port)) as c:
            c.start_all()
            status = await c.wait_for(
                lambda s: "the same start failure" in vs_of(s, "mail1")["reason"],
                timeout=60, what="mail1 left failed")
            mail1 = vs_of(status, "mail1")
            assert mail1["state"] == "failed" and mail1["owner"] is None
            assert mail1["reason"].startswith(
                "left failed: the same start failure on node1 and node4: banner: cannot start "
            ), mail1["reason"]
            assert (f"{address}:{port} is already in use (held by pid {os.getpid()}: "
                    in mail1["reason"])
            await c.wait_for(lambda s: owners(s) == {"mail1": None, "mail2": "node2",
                                                     "mail3": "node3"},
                             what="mail2 and mail3 online where they belong")
            assert c.store is not None
            kv = await c.store.get(keys.FAILURES + "mail1")
            assert kv is not None
            history = FailoverHistory.from_store(kv.key, kv.value)
            assert [e.node for e in history.entries] == ["node1", "node4"]
            assert len({e.failure for e in history.entries}) == 1

            # The operator frees the port and clears the failures: mail1 starts again.
            stray.close()
            cleared = c.cli("vs", "clear-failures", "mail1")
            assert cleared.returncode == 0, cleared.stderr
            await c.wait_for(lambda s: owners(s)["mail1"] == "node1", what="mail1 on node1")
    finally:
        stray.close()


def one_home_cluster(tmp: Path, distributions: Distributions, fault: str) -> LocalCluster:
    """Two nodes; mail1 may run on node1 only, so a failure there leaves it failed and
    its status keeps saying why. Its resource ``f`` misbehaves (``fault``) at its first
    online, with a 1 s pending timeout."""
    distributions.add("faulty", faulty_types.ENTRY_POINT)
    (tmp / "fault-mail1").touch()
    toml = (
        '[cluster]\nplacement = "active-passive"\ntiming = "default"\n'
        "[nodes.node1]\n[nodes.node2]\n"
        "[virtual_servers.mail1]\n"
        'preferred_owners = ["node1"]\npossible_owners = ["node1"]\n'
        f"host_timeout = {HOST_TIMEOUT}\n"
        "[virtual_servers.mail1.resources.f]\n"
        'type = "faulty"\npending_timeout = 1.0\n'
        f'properties = {{ fault = "{fault}", trigger = "{tmp}/fault-mail1" }}\n'
    )
    return LocalCluster(tmp, f"sqlite://{tmp}/cluster.db", toml, env=distributions.env())


@pytest.mark.parametrize(
    ("fault", "failure"),
    [("wedge_online",
      r"resource host \d+ did not answer for \d+\.\d s while starting; killed"),
     ("ignore_cancel_online", re.escape("f: online pending timeout (1 s) expired"))],
    ids=["host-hung-while-starting", "online-past-its-pending-timeout"])
async def test_a_start_that_hangs_says_why_in_status_and_explain(
    tmp_path: Path, distributions: Distributions, fault: str, failure: str
) -> None:
    """A start that hangs is a start failure like any other: one line says what hung,
    in the status, in `clustermail explain` and in the failover history."""
    async with one_home_cluster(tmp_path, distributions, fault) as c:
        c.start_all(2)
        status = await c.wait_for(
            lambda s: vs_of(s, "mail1")["state"] == "failed" and vs_of(s, "mail1")["owner"]
            is None, timeout=60, what="mail1 left failed after its start hung on node1")
        reason = vs_of(status, "mail1")["reason"]
        assert re.search(rf"it failed on node1 \({failure}\)", reason), reason

        explained = c.cli("explain", "mail1", "--json")
        assert explained.returncode == 0, explained.stderr
        text = json.loads(explained.stdout)["explanation"]
        assert re.search(rf"^  start failure on node1: {failure}$", text, re.MULTILINE), text

        assert c.store is not None
        kv = await c.store.get(keys.FAILURES + "mail1")
        assert kv is not None
        history = FailoverHistory.from_store(kv.key, kv.value)
        assert [e.node for e in history.entries] == ["node1"]
        assert re.fullmatch(failure, history.entries[0].failure), history.entries
