"""The resource host as a real process: online/offline, restarts, fencing, commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clustermail.cluster import procutil
from clustermail.cluster.host_protocol import EXIT_AGENT_GONE
from clustermail.cluster.resources.disk import EPOCH_FILE
from clustermail.cluster.resources.network_name import name_key
from tests.cluster.resource_host import plugin_example
from tests.support.distributions import Distributions
from tests.support.hostproc import (
    FAST_POLICY,
    HOST_CMD,
    EventStream,
    StartHost,
    connect_refused,
    mail1_spec,
    process_resource,
    read_banner,
    states,
    store_get,
)
from tests.support.ports import free_port

ADDRESS = "127.0.0.11"


def test_online_in_order_serves_publishes_and_mounts(tmp_path: Path, start_host: StartHost) -> None:
    port = free_port(ADDRESS)
    spec = mail1_spec(tmp_path, port)
    host = start_host(spec)
    host.events.group("online")
    assert states(host.events.seen, "online") == ["ip", "name", "disk", "banner"]
    banner = host.events.seen[-2]
    assert banner["resource"] == "banner" and banner["pid"] > 0

    line = read_banner(ADDRESS, port)
    assert line == (
        f"220 mail1 clustermail placeholder ready (pid {banner['pid']}, node node1)\r\n"
    )
    entry = store_get(spec["store"], name_key("mail1"))
    assert entry is not None
    assert json.loads(entry) == {
        "name": "mail1", "address": ADDRESS, "node": "node1", "vs": "mail1", "epoch": 7
    }
    disk = Path(spec["data_dir"]) / "disks" / "mail1"
    assert (disk / EPOCH_FILE).read_text().strip() == "7"
    assert (tmp_path / "data" / "logs" / "mail1-banner.log").exists()


def test_offline_in_reverse_order_then_exit_0(tmp_path: Path, start_host: StartHost) -> None:
    port = free_port(ADDRESS)
    spec = mail1_spec(tmp_path, port)
    host = start_host(spec)
    host.events.group("online")
    banner_pid = host.child_pids()[0]

    host.send({"cmd": "offline"})
    host.events.group("offline")
    assert host.wait_exit() == 0
    assert states(host.events.seen, "offline") == ["banner", "disk", "name", "ip"]
    assert not procutil.pid_alive(banner_pid)
    assert connect_refused(ADDRESS, port)
    assert store_get(spec["store"], name_key("mail1")) is None


def test_killed_service_restarts_until_threshold_then_group_fails(
    tmp_path: Path, start_host: StartHost
) -> None:
    port = free_port(ADDRESS)
    spec = mail1_spec(tmp_path, port)  # restart_threshold 2 within 60 s
    host = start_host(spec)
    host.events.group("online")
    pid = host.child_pids()[0]

    for attempt in (1, 2):
        os.kill(pid, signal.SIGKILL)
        failed = host.events.resource("banner", "failed")
        assert "quick check failed" in failed["reason"]
        pending = host.events.resource("banner", "online_pending")
        assert f"restart {attempt} of 2" in pending["reason"]
        new_pid = host.events.resource("banner", "online")["pid"]
        assert new_pid != pid
        pid = new_pid
        assert f"pid {pid}," in read_banner(ADDRESS, port)

    os.kill(pid, signal.SIGKILL)
    failed = host.events.resource("banner", "failed")
    assert "restart threshold exceeded" in failed["reason"]
    group = host.events.group("failed")
    assert "banner" in group["reason"]
    assert host.wait_exit() == 1
    host.events.drain()
    # The rest went offline on the way out, dependents first.
    assert states(host.events.seen, "offline")[-3:] == ["disk", "name", "ip"]
    assert store_get(spec["store"], name_key("mail1")) is None


def test_stdin_eof_kills_children_at_once(tmp_path: Path, start_host: StartHost) -> None:
    host = start_host(mail1_spec(tmp_path, free_port(ADDRESS)))
    host.events.group("online")
    banner_pid = host.child_pids()[0]

    started = time.monotonic()
    host.close_stdin()
    assert host.wait_exit(5.0) == 3
    assert procutil.wait_gone([banner_pid], 5.0) == []
    assert time.monotonic() - started < 3.0


MIDDLE = """
import subprocess, sys, time
host = subprocess.Popen(sys.argv[3:], stdin=int(sys.argv[1]), stdout=int(sys.argv[2]),
                        stderr=subprocess.DEVNULL)
print(host.pid, flush=True)
time.sleep(60)
"""


def test_sigkill_of_the_parent_kills_host_and_children(tmp_path: Path, reaper: list[int]) -> None:
    # The host's stdin and stdout pipes stay open on our side, so only the
    # parent-death signal can tell it that its parent (the "agent") died.
    spec_r, spec_w = os.pipe()
    events_r, events_w = os.pipe()
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, str(spec_r), str(events_w), *HOST_CMD],
        pass_fds=(spec_r, events_w),
        stdout=subprocess.PIPE,
    )
    reaper.append(middle.pid)
    os.close(spec_r)
    os.close(events_w)
    try:
        assert middle.stdout is not None
        host_pid = int(middle.stdout.readline())
        reaper.append(host_pid)
        events = EventStream(os.fdopen(events_r, "rb"))
        spec = mail1_spec(tmp_path, free_port(ADDRESS))
        os.write(spec_w, json.dumps(spec).encode() + b"\n")
        events.group("online")
        banner_pid = next(e["pid"] for e in events.seen if e.get("pid"))
        reaper.append(banner_pid)

        middle.kill()
        middle.wait(5.0)
        assert procutil.wait_gone([host_pid, banner_pid], 5.0) == []
    finally:
        os.close(spec_w)
        if middle.stdout is not None:
            middle.stdout.close()


def _disk_only(tmp_path: Path, epoch: int) -> dict[str, object]:
    disk = tmp_path / "shared" / "mail1"
    return {
        "vs": "mail1", "node": "node2", "epoch": epoch,
        "store": f"sqlite://{tmp_path}/cluster.db", "data_dir": str(tmp_path / "data"),
        "resources": [{"name": "disk", "type": "disk", "properties": {"path": str(disk)},
                       "policy": FAST_POLICY}],
    }


def test_disk_fencing_refuses_older_epoch_and_takes_newer(
    tmp_path: Path, start_host: StartHost
) -> None:
    disk = tmp_path / "shared" / "mail1"
    (disk / ".clustermail").mkdir(parents=True)
    (disk / EPOCH_FILE).write_text("9\n")

    old = start_host(_disk_only(tmp_path, 8))
    failed = old.events.resource("disk", "failed")
    assert "epoch 9" in failed["reason"] and "newer owner" in failed["reason"]
    old.events.group("failed")
    assert old.wait_exit() == 1
    # A permanent refusal: no restart was attempted.
    assert len(states(old.events.seen, "online_pending")) == 1
    assert (disk / EPOCH_FILE).read_text().strip() == "9"

    new = start_host(_disk_only(tmp_path, 10))
    new.events.group("online")
    assert (disk / EPOCH_FILE).read_text().strip() == "10"
    new.send({"cmd": "offline"})
    assert new.wait_exit() == 0


def test_update_adds_and_removes_one_resource_only(tmp_path: Path, start_host: StartHost) -> None:
    port, port2 = free_port(ADDRESS), free_port(ADDRESS)
    spec = mail1_spec(tmp_path, port)
    host = start_host(spec)
    host.events.group("online")
    banner_pid = host.child_pids()[0]

    spec2 = json.loads(json.dumps(spec))
    spec2["resources"].append(process_resource("imap4", ADDRESS, port2, "mail1", ["ip", "name"]))
    mark = len(host.events.seen)
    host.send({"cmd": "update", "spec": spec2})
    imap_pid = host.events.resource("imap4", "online")["pid"]
    host.events.drain()
    assert _touched(host.events.seen[mark:]) == {"imap4"}
    assert f"pid {imap_pid}," in read_banner(ADDRESS, port2)
    assert f"pid {banner_pid}," in read_banner(ADDRESS, port)

    mark = len(host.events.seen)
    host.send({"cmd": "update", "spec": spec})
    host.events.resource("imap4", "offline")
    host.events.drain()
    assert _touched(host.events.seen[mark:]) == {"imap4"}
    assert procutil.wait_gone([imap_pid], 5.0) == []
    assert connect_refused(ADDRESS, port2)
    assert f"pid {banner_pid}," in read_banner(ADDRESS, port)


def _touched(events: list[dict[str, object]]) -> set[object]:
    return {e.get("resource") for e in events if e.get("event") == "resource"}


def test_bad_input_gets_error_events_and_the_host_goes_on(
    tmp_path: Path, start_host: StartHost
) -> None:
    spec = mail1_spec(tmp_path, free_port(ADDRESS))
    host = start_host(spec)
    host.events.group("online")
    bad_update = json.loads(json.dumps(spec))
    bad_update["resources"][0]["depends_on"] = ["banner"]  # a cycle
    for line, expected in [
        ("not json at all", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"cmd": "reboot"}', "unknown command 'reboot'"),
        ('{"cmd": "resource_offline"}', "command.resource"),
        ('{"cmd": "resource_online", "resource": "nope"}', "no resource named 'nope'"),
        ("\xff\xfe", "not JSON"),
        (json.dumps({"cmd": "update", "spec": bad_update}), "dependency cycle"),
        (json.dumps({"cmd": "update", "spec": {**spec, "epoch": 8}}), "cannot change epoch"),
    ]:
        host.send(line)
        assert expected in host.events.error()["message"], line

    host.send({"cmd": "resource_offline", "resource": "banner"})
    host.events.resource("banner", "offline")
    host.events.group("partially_online")
    assert host.proc.poll() is None


def test_resource_offline_takes_dependents_first_and_online_brings_them_back(
    tmp_path: Path, start_host: StartHost
) -> None:
    host = start_host(mail1_spec(tmp_path, free_port(ADDRESS)))
    host.events.group("online")

    mark = len(host.events.seen)
    host.send({"cmd": "resource_offline", "resource": "ip"})
    host.events.group("partially_online")
    assert states(host.events.seen[mark:], "offline") == ["banner", "name", "ip"]

    mark = len(host.events.seen)
    host.send({"cmd": "resource_online", "resource": "ip"})
    host.events.group("online")
    assert states(host.events.seen[mark:], "online") == ["ip", "name", "banner"]


def test_lease_deadline_passing_fences_the_host(tmp_path: Path, start_host: StartHost) -> None:
    host = start_host(mail1_spec(tmp_path, free_port(ADDRESS)))
    host.events.group("online")
    banner_pid = host.child_pids()[0]
    host.send({"cmd": "lease", "safe_until": time.monotonic() + 0.5})
    host.send({"cmd": "lease", "safe_until": time.monotonic() + 0.8})  # renewed once
    host.send({"cmd": "lease", "safe_until": time.monotonic() + 0.2})  # stale: ignored
    assert host.wait_exit(5.0) == 4
    assert procutil.wait_gone([banner_pid], 5.0) == []


def test_a_host_frozen_past_its_deadline_fences_when_continued(
        tmp_path: Path, start_host: StartHost) -> None:
    """SIGSTOP past the lease deadline, with the agent's later deadlines waiting in
    the pipe (a healthy agent kept writing): on SIGCONT the host fences before it
    reads them; another node may own the virtual server by now."""
    host = start_host(mail1_spec(tmp_path, free_port(ADDRESS)))
    host.events.group("online")
    banner_pid = host.child_pids()[0]
    host.send({"cmd": "lease", "safe_until": time.monotonic() + 1.0})
    host.send({"cmd": "ping", "seq": 1})  # answered: the lease line was read before it
    host.events.wait(lambda e: e.get("event") == "pong" and e.get("seq") == 1)
    os.kill(host.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(1.2)  # frozen on purpose: the fault under test is the passing time
        for _ in range(20):
            host.send({"cmd": "lease", "safe_until": time.monotonic() + 30})
    finally:
        os.kill(host.proc.pid, signal.SIGCONT)
    assert host.wait_exit(5.0) == 4
    assert procutil.wait_gone([banner_pid], 5.0) == []


def test_a_host_frozen_within_its_deadline_carries_on(
        tmp_path: Path, start_host: StartHost) -> None:
    host = start_host(mail1_spec(tmp_path, free_port(ADDRESS)))
    host.events.group("online")
    host.send({"cmd": "lease", "safe_until": time.monotonic() + 30})
    os.kill(host.proc.pid, signal.SIGSTOP)
    os.kill(host.proc.pid, signal.SIGCONT)
    host.send({"cmd": "ping", "seq": 7})
    host.events.wait(lambda e: e.get("event") == "pong" and e.get("seq") == 7)
    assert host.proc.poll() is None


def test_rejected_spec_exits_2_with_a_clear_error(tmp_path: Path, start_host: StartHost) -> None:
    spec = mail1_spec(tmp_path, free_port(ADDRESS))
    spec["resources"][3]["type"] = "no_such_type"
    host = start_host(spec)
    error = host.events.error()
    assert "unknown resource type 'no_such_type'" in error["message"]
    host.events.group("failed")
    assert host.wait_exit() == 2


def test_address_that_is_not_local_fails_the_group(tmp_path: Path, start_host: StartHost) -> None:
    spec = mail1_spec(tmp_path, free_port(ADDRESS))
    spec["resources"][0]["properties"]["address"] = "192.0.2.123"  # TEST-NET-1: never local
    host = start_host(spec)
    failed = host.events.group("failed")
    assert "192.0.2.123 is not usable" in failed["reason"]
    assert host.wait_exit() == 1
    # Tried once and restarted twice (restart_threshold 2); nothing else came online.
    assert len(states(host.events.seen, "online_pending")) == 3
    assert "banner" not in states(host.events.seen, "online_pending")


def test_a_third_party_type_runs_inside_the_host(
    tmp_path: Path, start_host: StartHost, distributions: Distributions
) -> None:
    """A type another distribution declares as an entry point: nothing else to do."""
    distributions.add("acme-echo", plugin_example.ENTRY_POINT)
    port = free_port(ADDRESS)
    spec = mail1_spec(tmp_path, free_port(ADDRESS))
    spec["resources"].append({"name": "echo", "type": "echo", "properties": {"port": port},
                              "depends_on": ["ip"], "policy": FAST_POLICY})
    host = start_host(spec, env=distributions.env())
    host.events.group("online")
    assert "pid" not in host.events.seen[-2]  # in process: no pid of its own
    assert read_banner(ADDRESS, port) == "echo mail1 epoch 7\r\n"
    host.send({"cmd": "offline"})
    assert host.wait_exit() == 0
    assert connect_refused(ADDRESS, port)


def test_a_failed_dependency_restarts_with_its_dependents(
    tmp_path: Path, start_host: StartHost
) -> None:
    port = free_port(ADDRESS)
    spec = mail1_spec(tmp_path, port)
    spec["resources"].insert(3, {
        "name": "helper", "type": "process", "depends_on": [], "policy": FAST_POLICY,
        "properties": {"command": ["sleep", "60"], "start_grace": 0.1},
    })
    spec["resources"][4]["depends_on"].append("helper")  # banner needs the helper
    host = start_host(spec)
    host.events.group("online")
    helper_pid, banner_pid = host.child_pids()

    mark = len(host.events.seen)
    os.kill(helper_pid, signal.SIGKILL)
    host.events.resource("banner", "online")
    changes = [(e["resource"], e["state"]) for e in host.events.seen[mark:]]
    assert changes == [
        ("banner", "offline_pending"), ("banner", "offline"),
        ("helper", "failed"),
        ("helper", "online_pending"), ("helper", "online"),
        ("banner", "online_pending"), ("banner", "online"),
    ]
    new_helper, new_banner = host.child_pids()[-2:]
    assert new_helper != helper_pid and new_banner != banner_pid
    assert procutil.wait_gone([banner_pid], 5.0) == []
    host.events.drain()
    assert not any(e.get("event") == "group" for e in host.events.seen[mark:])


def test_online_pending_timeout_fails_the_group_and_kills_the_attempt(
    tmp_path: Path, start_host: StartHost
) -> None:
    pidfile = tmp_path / "slow.pid"
    spec = mail1_spec(tmp_path, free_port(ADDRESS))
    spec["resources"][3]["properties"]["command"] = f"echo $$ > {pidfile}; exec sleep 60"
    spec["resources"][3]["policy"] = {**FAST_POLICY, "pending_timeout": 0.5}
    host = start_host(spec)
    failed = host.events.resource("banner", "failed")
    assert failed["reason"] == "online pending timeout (0.5 s) expired"
    host.events.group("failed")
    assert host.wait_exit() == 1
    assert procutil.wait_gone([int(pidfile.read_text())], 5.0) == []


def test_host_whose_parent_is_already_gone_dies_at_once(tmp_path: Path) -> None:
    # --parent-pid names a process that is not our parent: the parent-death
    # signal could never come, so the host must not start at all.
    proc = subprocess.Popen([*HOST_CMD, "--parent-pid", "1"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.wait(10) == EXIT_AGENT_GONE
    assert proc.stdin is not None
    proc.stdin.close()
