"""`clustermail lab`: several machines on one box, driven through the CLI as a user would.

The lab is built with 4 node machines and a client machine; a client on the client
machine keeps sending mail to mail3's address while mail3's owner loses power, and
every message that got its 250 must be readable afterwards (node3 is also an etcd
member: the cluster carries on without it). Then mail3's new owner is partitioned
away: mail3 returns on the majority side, and the partitioned machine, seen from
inside, has stopped serving and unmounted mail3's disk. Then etcd loses quorum: no
node serves until it is back. `lab down` must leave nothing behind.

Needs root, network namespaces, iproute2, arping and etcd (CI has all).
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or any(shutil.which(t) is None for t in ("ip", "nsenter", "unshare", "arping", "etcd")),
    reason="needs root, network namespaces, iproute2, util-linux, arping and etcd",
)

SENDER = r"""
import os, smtplib, sys, time
address, acked, stop = sys.argv[1], sys.argv[2], sys.argv[3]
n = 0
with open(acked, "a") as out:
    while not os.path.exists(stop):
        n += 1
        try:
            with smtplib.SMTP(address, 2525, timeout=3) as s:
                s.sendmail("tester@client.test", ["carol@example.test"],
                           f"Subject: lab-{n}\r\n\r\nmessage {n}\r\n")
            out.write(f"lab-{n}\n")
            out.flush()
        except (OSError, smtplib.SMTPException):
            time.sleep(0.1)
"""


def lab(data: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clustermail", "lab", *args, "--data", str(data)],
                          capture_output=True, text=True, timeout=timeout)


def lab_exec(data: Path, machine: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clustermail", "lab", "exec", machine,
                           "--data", str(data), "--", *argv],
                          capture_output=True, text=True, timeout=60)


def status(data: Path) -> dict[str, Any]:
    out = lab(data, "status", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def owners(s: dict[str, Any]) -> dict[str, str | None]:
    if s["cluster"] is None:
        return {}
    return {v["name"]: v["owner"] for v in s["cluster"]["virtual_servers"]
            if v["state"] == "online"}


def nodes_up(s: dict[str, Any]) -> set[str]:
    if s["cluster"] is None:
        return set()
    return {n["name"] for n in s["cluster"]["nodes"] if n["state"] == "up"}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def acked(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def subjects(address: str, password: str) -> set[str]:
    # Plaintext login is for loopback only: IMAP over TLS (the lab's self-signed cert).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with imaplib.IMAP4_SSL(address, 2993, ssl_context=context, timeout=10) as imap:
        imap.login("carol@example.test", password)
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    found = set()
    for item in data:
        if isinstance(item, tuple):
            found.add(item[1].decode().split(":", 1)[1].strip())
    return found


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "lab"
    try:
        yield data
    finally:
        if (data / "lab.json").exists():
            lab(data, "down", timeout=120)


@pytest.mark.timeout(480)
def test_lab_failover_partition_and_down(data: Path, tmp_path: Path) -> None:
    out = lab(data, "up", "--machines", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mail3" in out.stdout
    state = json.loads((data / "lab.json").read_text())
    tag, mail3, images = state["tag"], state["addresses"]["mail3"], state["images"]
    password = json.loads((data / "passwords.json").read_text())["carol@example.test"]
    assert (data / "passwords.json").stat().st_mode & 0o777 == 0o600
    wait_for(lambda: owners(status(data)).get("mail3") == "node3", "mail3 online on node3")
    # mail3's disk is mounted on its owner only.
    assert "disks/mail3" in lab_exec(data, "node3", "cat", "/proc/self/mountinfo").stdout
    assert "disks/mail3" not in lab_exec(data, "node4", "cat", "/proc/self/mountinfo").stdout

    # A mail client on the client machine.
    swaks = lab_exec(data, "client", "swaks", "--server", f"{mail3}:2525", "--to",
                     "carol@example.test", "--from", "tester@client.test", "--header",
                     "Subject: lab-swaks")
    assert swaks.returncode == 0 and " 250 " in swaks.stdout, swaks.stdout + swaks.stderr

    # The client keeps sending while mail3's owner loses power.
    acked_file, stop = tmp_path / "acked", tmp_path / "stop"
    sender = subprocess.Popen([sys.executable, "-m", "clustermail", "lab", "exec", "client",
                               "--data", str(data), "--", sys.executable, "-c", SENDER, mail3,
                               str(acked_file), str(stop)])
    try:
        wait_for(lambda: len(acked(acked_file)) >= 3, "the client's first 250s", timeout=30)
        out = lab(data, "power-off", "node3")
        assert out.returncode == 0, out.stderr
        before = len(acked(acked_file))
        wait_for(lambda: owners(status(data)).get("mail3") == "node4", "mail3 online on node4")
        wait_for(lambda: len(acked(acked_file)) >= before + 3, "250s from node4", timeout=60)
    finally:
        stop.touch()
        sender.wait(timeout=30)
    sent = {"lab-swaks", *acked(acked_file)}
    assert sent <= subjects(mail3, password), sent - subjects(mail3, password)

    # node3 boots again; then mail3's owner (node4) is cut off the network.
    out = lab(data, "power-on", "node3")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: nodes_up(status(data)) == {"node1", "node2", "node3", "node4"},
             "node3 back")
    out = lab(data, "partition", "node4")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: owners(status(data)).get("mail3") == "node3", "mail3 back on node3")

    def stopped(machine: str) -> None:
        """Seen from inside the machine: no mail3 address, nothing listening, mail3's
        shared disk unmounted."""
        left: list[str] = []

        def check() -> bool:
            addrs = lab_exec(data, machine, "ip", "-br", "addr", "show", "eth0").stdout
            listening = lab_exec(data, machine, "ss", "-Htln").stdout
            mounts = lab_exec(data, machine, "cat", "/proc/self/mountinfo").stdout
            left[:] = [what for what, there in (("address", mail3 in addrs),
                                                ("listener", f"{mail3}:2525" in listening),
                                                ("mount", "disks/mail3" in mounts)) if there]
            return not left

        try:
            wait_for(check, f"{machine} to stop serving mail3", timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still on {machine}: {', '.join(left)}") from None

    stopped("node4")
    assert sent <= subjects(mail3, password)
    out = lab(data, "heal")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: "node4" in nodes_up(status(data)), "node4 rejoined")
    assert owners(status(data)).get("mail3") == "node3"  # never a second owner

    # etcd loses quorum (two of its three members cut off): every node stops serving
    # rather than risk two owners; service returns with quorum, nothing acknowledged lost.
    out = lab(data, "partition", "node1", "node2")
    assert out.returncode == 0, out.stderr
    serving: list[str] = []

    def nobody_serves() -> bool:
        serving[:] = [m for m in ("node1", "node2", "node3", "node4")
                      if ":2525" in lab_exec(data, m, "ss", "-Htln").stdout]
        return not serving

    try:
        wait_for(nobody_serves, "every node to stop serving without quorum", timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still serving: {', '.join(serving)}") from None
    out = lab(data, "heal")
    assert out.returncode == 0, out.stderr
    # The status keys live on etcd leases that a new etcd leader extends: "online" may
    # be stale for a TTL, so what counts is mail3 answering again, with everything.
    def all_readable() -> bool:
        try:
            return sent <= subjects(mail3, password)
        except (OSError, imaplib.IMAP4.error):
            return False

    wait_for(all_readable, "mail3 serving again with every acknowledged message", timeout=120)
    wait_for(lambda: len(owners(status(data))) == 3, "every virtual server back", timeout=120)

    # mail3's owner hangs (SIGSTOP of the whole machine, cable in): mail3 moves; when
    # the machine wakes up its resource host, past its lease, stops serving and
    # unmounts before it writes anything.
    frozen = owners(status(data))["mail3"]
    assert frozen is not None
    out = lab(data, "freeze", frozen)
    assert out.returncode == 0, out.stderr
    try:
        wait_for(lambda: owners(status(data)).get("mail3") not in (None, frozen),
                 "mail3 online on another machine")
    finally:
        out = lab(data, "thaw", frozen)
        assert out.returncode == 0, out.stderr
    stopped(frozen)
    wait_for(all_readable, "every acknowledged message after the freeze", timeout=60)

    out = lab(data, "down", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (data / "lab.json").exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"cml{tag}" not in netns
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert f"cml{tag}" not in links
    for image in images:
        loops = subprocess.run(["losetup", "-j", image], capture_output=True, text=True).stdout
        assert not loops.strip(), loops
    with contextlib.suppress(FileNotFoundError):
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    assert str(data) not in (proc / "cmdline").read_bytes().decode(errors="replace")
