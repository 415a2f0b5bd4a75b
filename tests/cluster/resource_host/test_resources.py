"""The generic resource types in process, against real files, sockets and a real store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clustermail.cluster import procutil, resource_types
from clustermail.cluster.banner import serve
from clustermail.cluster.resource_schema import ResourceType
from clustermail.cluster.resource_types import UnknownResourceType
from clustermail.cluster.resources.base import (
    PropertyError,
    ResourceError,
    StoreHandle,
)
from clustermail.cluster.resources.disk import (
    AUDIT_FILE,
    EPOCH_FILE,
    DiskResource,
    FencedError,
    check_epoch,
    mount,
    read_epoch,
)
from clustermail.cluster.resources.ip_address import IpAddressResource, interface_commands
from clustermail.cluster.resources.network_name import NetworkNameResource, name_key
from clustermail.cluster.resources.process import ProcessResource
from clustermail.coord import open_store
from tests.support.ports import free_port
from tests.support.resource_env import Env

ADDRESS = "127.0.0.11"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    await e.store.close()


# --------------------------------------------------------------------------- disk


def test_epoch_file_fences_older_owners(tmp_path: Path) -> None:
    assert read_epoch(tmp_path) is None
    check_epoch(tmp_path, 1)  # nothing recorded yet: anyone may mount
    mount(tmp_path, 9)
    assert (tmp_path / EPOCH_FILE).read_text() == "9\n"
    check_epoch(tmp_path, 9)
    check_epoch(tmp_path, 10)
    with pytest.raises(FencedError, match="mounted with epoch 9, newer than ours \\(8\\)"):
        check_epoch(tmp_path, 8)
    with pytest.raises(FencedError):
        mount(tmp_path, 8)
    mount(tmp_path, 10)
    assert read_epoch(tmp_path) == 10
    assert sorted(p.name for p in (tmp_path / ".clustermail").iterdir()) == [
        "audit.log", "epoch", "lock"]
    trail = [json.loads(line) for line in (tmp_path / AUDIT_FILE).read_text().splitlines()]
    assert [(e["event"], e["epoch"], e["pid"]) for e in trail] == [
        ("mount", 9, os.getpid()), ("mount", 10, os.getpid())]  # refused mounts leave none
    assert trail[0]["mono"] <= trail[1]["mono"] <= time.monotonic()


def test_garbage_epoch_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".clustermail").mkdir()
    (tmp_path / EPOCH_FILE).write_text("banana")
    with pytest.raises(FencedError, match="not an epoch"):
        check_epoch(tmp_path, 100)


async def test_disk_resource_online_checks(env: Env) -> None:
    missing = env.make(DiskResource, "d1", {"path": str(env.tmp / "nope"), "create": False})
    with pytest.raises(ResourceError, match="does not exist") as err:
        await missing.online()
    assert err.value.permanent

    disk = env.make(DiskResource, "d2", {"path": str(env.tmp / "disks" / "mail1")})
    await disk.online()
    assert read_epoch(disk.path) == 7
    assert await disk.quick_check() and await disk.thorough_check()
    mount(disk.path, 8)  # a newer owner mounted it
    assert await disk.quick_check()
    assert not await disk.thorough_check()
    await disk.offline()
    assert not await disk.quick_check()
    trail = [json.loads(line) for line in (disk.path / AUDIT_FILE).read_text().splitlines()]
    assert [(e["event"], e["epoch"]) for e in trail] == [
        ("mount", 7), ("mount", 8), ("unmount", 7)]

    with pytest.raises(PropertyError, match="not absolute"):
        env.make(DiskResource, "d3", {"path": "relative"})


# --------------------------------------------------------------------------- ip address


def test_interface_mode_command_lines() -> None:
    on, off = interface_commands("10.99.0.50", 24, "vA", True)
    assert on == [
        ["ip", "addr", "add", "10.99.0.50/24", "dev", "vA"],
        ["arping", "-U", "-c", "3", "-I", "vA", "-s", "10.99.0.50", "10.99.0.50"],
    ]
    assert off == [["ip", "addr", "del", "10.99.0.50/24", "dev", "vA"]]
    on, _ = interface_commands("10.99.0.50", 24, "vA", False)
    assert len(on) == 1  # arp = false
    on, _ = interface_commands("fd00::5", 64, "vA", True)
    assert len(on) == 1  # no ARP for IPv6


async def test_loopback_address(env: Env) -> None:
    ip = env.make(IpAddressResource, "ip", {"address": ADDRESS})
    assert not await ip.quick_check()
    await ip.online()
    assert await ip.quick_check()
    await ip.offline()

    foreign = env.make(IpAddressResource, "ip2", {"address": "192.0.2.7"})
    with pytest.raises(ResourceError, match=r"192\.0\.2\.7 is not usable on node node1"):
        await foreign.online()
    for props, message in [
        ({"address": "300.1.1.1"}, "not an IP address"),
        ({"address": ADDRESS, "mode": "magic"}, "expected 'loopback' or 'interface'"),
        ({"address": ADDRESS, "mode": "interface"}, "'interface' is required"),
        ({}, "'address' is required"),
    ]:
        with pytest.raises(PropertyError, match=message):
            env.make(IpAddressResource, "bad", props)


# --------------------------------------------------------------------------- network name


async def test_network_name_publishes_with_epoch_guard(env: Env) -> None:
    env.make(IpAddressResource, "ip", {"address": ADDRESS})
    name = env.make(NetworkNameResource, "name", {"name": "mail1"}, ("ip",))
    store = await env.store.get()
    key = name_key("mail1")
    await store.put(key, json.dumps({"name": "mail1", "vs": "mail1", "epoch": 6}))

    await name.online()  # replaces an older epoch
    entry = json.loads((await store.get(key)).value)  # type: ignore[union-attr]
    assert entry == {"name": "mail1", "address": ADDRESS, "node": "node1", "vs": "mail1",
                     "epoch": 7}
    assert await name.thorough_check()

    newer = json.dumps({"name": "mail1", "address": ADDRESS, "node": "node2", "vs": "mail1",
                        "epoch": 8})
    await store.put(key, newer)
    assert not await name.thorough_check()
    await name.offline()  # not ours any more: left alone
    assert (await store.get(key)).value.decode() == newer  # type: ignore[union-attr]
    with pytest.raises(ResourceError, match="published by epoch 8") as err:
        await name.online()
    assert err.value.permanent


async def test_network_name_offline_deletes_its_own_entry(env: Env) -> None:
    env.make(IpAddressResource, "ip", {"address": ADDRESS})
    name = env.make(NetworkNameResource, "name", {"name": "mail1"}, ("ip",))
    await name.online()
    await name.offline()
    store = await env.store.get()
    assert await store.get(name_key("mail1")) is None


async def test_network_name_refuses_another_virtual_servers_name(env: Env) -> None:
    env.make(IpAddressResource, "ip", {"address": ADDRESS})
    name = env.make(NetworkNameResource, "name", {"name": "mail1"}, ("ip",))
    store = await env.store.get()
    await store.put(name_key("mail1"), json.dumps({"vs": "mail2", "epoch": 1}))
    with pytest.raises(ResourceError, match="belongs to virtual server 'mail2'"):
        await name.online()


async def test_network_name_needs_an_ip_dependency(env: Env) -> None:
    name = env.make(NetworkNameResource, "name", {"name": "mail1"})
    with pytest.raises(ResourceError, match="needs a dependency of type ip_address"):
        await name.online()


# --------------------------------------------------------------------------- process


async def test_process_that_exits_early_reports_its_output(env: Env) -> None:
    proc = env.make(ProcessResource, "svc", {
        "command": "echo 'cannot bind: Address already in use' >&2; exit 3",
        "tcp_check": f"{ADDRESS}:{free_port(ADDRESS)}",
    })
    with pytest.raises(ResourceError) as err:
        await proc.online()
    await proc.terminate()
    assert "exited with code 3 before accepting connections" in str(err.value)
    assert "Address already in use" in str(err.value)


async def test_a_port_held_by_a_stray_process_fails_the_start_naming_it(env: Env) -> None:
    """A stray listener's connections would pass for the service's: the online fails
    before starting anything, and says who holds the port."""
    with socket.socket() as stray:
        stray.bind((ADDRESS, 0))
        stray.listen()
        port = stray.getsockname()[1]
        proc = env.make(ProcessResource, "svc", {"command": ["sleep", "60"],
                                                 "tcp_check": f"{ADDRESS}:{port}"})
        with pytest.raises(ResourceError) as err:
            await proc.online()
        assert proc.pid is None
        assert str(err.value).startswith(
            f"svc: cannot start sleep: {ADDRESS}:{port} is already in use "
            f"(held by pid {os.getpid()}: ")


def test_banner_that_cannot_listen_names_the_holder() -> None:
    with socket.socket() as stray:
        stray.bind((ADDRESS, 0))
        stray.listen()
        port = stray.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "clustermail.cluster.banner", "--address",
                              ADDRESS, "--port", str(port)], capture_output=True, text=True,
                             timeout=30)
    assert run.returncode == 1
    assert f"banner: cannot listen on {ADDRESS}:{port}: " in run.stderr
    assert f"(held by pid {os.getpid()}: " in run.stderr


async def test_missing_program_is_a_permanent_error(env: Env) -> None:
    proc = env.make(ProcessResource, "svc", {"command": ["/nonexistent/service"]})
    with pytest.raises(ResourceError, match="cannot start /nonexistent/service") as err:
        await proc.online()
    assert err.value.permanent


async def test_stop_kills_the_whole_group_and_escalates_to_sigkill(env: Env) -> None:
    helper = env.tmp / "helper.pid"
    # Ignores SIGTERM and forks a helper: offline must still end both.
    proc = env.make(ProcessResource, "svc", {
        "command": f"trap '' TERM; sleep 60 & echo $! > {helper}; sleep 60",
        "stop_timeout": 0.3,
        "start_grace": 0.2,
        "env": ["EXTRA=1", "WITH_EQUALS=a=b"],
    })
    await proc.online()
    pid = proc.pid
    assert pid is not None and await proc.quick_check()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert {b"CLUSTERMAIL_VS=mail1", b"CLUSTERMAIL_EPOCH=7", b"EXTRA=1",
            b"WITH_EQUALS=a=b"} <= set(environ)
    assert os.getpgid(pid) == pid
    helper_pid = int(helper.read_text())
    started = time.monotonic()
    await proc.offline()
    assert time.monotonic() - started >= 0.3
    assert procutil.wait_gone([pid, helper_pid], 2.0) == []
    assert any("SIGKILL" in m for _, m in env.logs.lines)
    assert pid not in procutil.live_groups
    assert not await proc.quick_check()


async def test_health_command_drives_the_thorough_check(env: Env) -> None:
    flag = env.tmp / "healthy"
    proc = env.make(ProcessResource, "svc", {
        "command": ["sleep", "60"],
        "health_command": f"test -e {flag}",
        "start_grace": 0.1,
    })
    await proc.online()
    try:
        assert await proc.quick_check()
        assert not await proc.thorough_check()
        flag.touch()
        assert await proc.thorough_check()
    finally:
        await proc.terminate()


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({}, "'command' is required"),
        ({"command": []}, "'command' is empty"),
        ({"command": [1]}, "expected a list of strings"),
        ({"command": "x", "tcp_check": "nope"}, "expected host:port"),
        ({"command": "x", "stop_timeout": -1}, "'stop_timeout': expected a number >= 0"),
    ],
)
def test_process_property_errors(tmp_path: Path, props: dict[str, Any], message: str) -> None:
    with pytest.raises(PropertyError, match=message):
        Env(tmp_path).make(ProcessResource, "svc", props)


# --------------------------------------------------------------------------- banner


async def test_banner_greets_and_closes() -> None:
    port = free_port(ADDRESS)
    server = asyncio.create_task(serve(ADDRESS, port, "mail9"))
    try:
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection(ADDRESS, port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("banner never listened")
        line = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        assert line.decode().startswith("220 mail9 clustermail placeholder ready (pid ")
    finally:
        server.cancel()


def test_banner_exits_0_on_sigterm() -> None:
    port = free_port(ADDRESS)
    cmd = [sys.executable, "-m", "clustermail.cluster.banner", "--address", ADDRESS,
           "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, "CLUSTERMAIL_VS": "mail5"})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((ADDRESS, port), timeout=1) as s:
                    assert s.recv(100).startswith(b"220 mail5 ")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- registry


def test_registry() -> None:
    assert resource_types.get("process").resource is ProcessResource
    assert ProcessResource.type_name == "process"
    assert {"ip_address", "network_name", "disk", "process"} <= set(
        resource_types.resource_type_names())
    with pytest.raises(UnknownResourceType) as err:
        resource_types.get("no-such-type")
    assert "unknown resource type 'no-such-type' (known: " in str(err.value)
    assert "disk" in str(err.value) and "process" in str(err.value)
    assert "entry points of the group 'clustermail.resource_types'" in str(err.value)
    with pytest.raises(ValueError, match="already the resource type 'process'"):
        ResourceType("thing", ProcessResource)  # one class serves one type


async def test_store_handle_opens_once(tmp_path: Path) -> None:
    handle = StoreHandle(f"sqlite://{tmp_path}/c.db")
    first, second = await asyncio.gather(handle.get(), handle.get())
    assert first is second
    await handle.close()
    store = await open_store(f"sqlite://{tmp_path}/c.db")
    await store.close()
