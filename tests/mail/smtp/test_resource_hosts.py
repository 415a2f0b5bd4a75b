"""The smtp and pop3 resource types in real resource host processes, over the real
mail_store resource and recipient directory: two virtual servers on two loopback
addresses sharing one SQLite coordination store; mail from one to the other while the
target is down at first; submission with AUTH; POP3 reads it; live removal of pop3."""

from __future__ import annotations

import asyncio
import json
import poplib
import smtplib
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clustermail.coord import open_store
from tests.e2e.harness import free_addresses
from tests.support.directory import directory
from tests.support.hostproc import FAST_POLICY, StartHost
from tests.support.mail_fakes import DOMAIN, PASSWORD
from tests.support.ports import free_port

ALICE, CAROL = f"alice@{DOMAIN}", f"carol@{DOMAIN}"


def spec(tmp: Path, vs: str, address: str, ports: dict[str, int], *, epoch: int = 1,
         pop3: bool = True) -> dict[str, Any]:
    data = tmp / "data"
    res: list[dict[str, Any]] = [
        {"name": "ip", "type": "ip_address", "properties": {"address": address}},
        {"name": "name", "type": "network_name", "properties": {"name": vs},
         "depends_on": ["ip"]},
        {"name": "disk", "type": "disk", "properties": {"path": f"{data}/disks/{vs}"}},
        {"name": "store", "type": "mail_store", "depends_on": ["disk"]},
        {"name": "smtp", "type": "smtp", "depends_on": ["store", "ip"], "properties": {
            "port": ports["smtp"], "submission_port": ports["submission"],
            "submissions_port": ports["submissions"], "retry_base": 0.2, "retry_max": 0.5,
            "queue_poll": 0.2}},
    ]
    if pop3:
        res.append({"name": "pop3", "type": "pop3", "depends_on": ["store", "ip"],
                    "properties": {"port": ports["pop3"], "tls_port": ports["pop3s"],
                                   "allow_plaintext_on_loopback": True}})
    for r in res:
        r.setdefault("depends_on", [])
        r["policy"] = FAST_POLICY
    return {"vs": vs, "node": "node1", "epoch": epoch, "store": f"sqlite://{tmp}/cluster.db",
            "data_dir": str(data), "resources": res, "offline_resources": []}


def addresses() -> tuple[str, str]:
    """Two loopback addresses of a /24 no other test uses: ports picked free on them
    cannot be taken meanwhile by another test's server (they bind other addresses)."""
    base, _ = free_addresses()
    return f"{base}.11", f"{base}.12"


def ports(address: str) -> dict[str, int]:
    return {k: free_port(address) for k in ("smtp", "submission", "submissions", "pop3",
                                            "pop3s")}


def publish_config(tmp: Path, vs_ports: dict[str, dict[str, int]]) -> None:
    """The applied configuration, as far as routing reads it (each smtp port)."""
    from tests.support.hostproc import store_put

    config = {"nodes": {"node1": {}}, "virtual_servers": {vs: {"resources": {"smtp": {
        "type": "smtp", "properties": {"port": p["smtp"]}}}} for vs, p in vs_ports.items()}}
    store_put(f"sqlite://{tmp}/cluster.db", "/clustermail/config", json.dumps(config))


def add_users(tmp: Path, homes: dict[str, str], aliases: dict[str, str] | None = None) -> None:
    """Mailboxes in the directory (before the hosts start: their mail stores create them)."""

    async def add() -> None:
        store = await open_store(f"sqlite://{tmp}/cluster.db")
        try:
            d = directory(store)
            await d.add_domain(DOMAIN)
            for address, vs in homes.items():
                await d.add_mailbox(address, password=PASSWORD, server=vs)
            for alias, target in (aliases or {}).items():
                await d.add_alias(alias, target)
        finally:
            await store.close()

    asyncio.run(add())


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the service may not answer yet
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"not in time (last error: {last!r})")


def pop3_count(address: str, port: int, user: str, password: str = PASSWORD) -> int:
    c = poplib.POP3(address, port, timeout=5)
    try:
        c.user(user)
        c.pass_(password)
        count: int = c.stat()[0]
        return count
    finally:
        c.quit()


@pytest.mark.timeout(90)
def test_routing_between_two_resource_hosts(tmp_path: Path, start_host: StartHost) -> None:
    add_users(tmp_path, {ALICE: "mail1", CAROL: "mail2"})
    a1, a2 = addresses()
    p1, p2 = ports(a1), ports(a2)
    publish_config(tmp_path, {"mail1": p1, "mail2": p2})
    host1 = start_host(spec(tmp_path, "mail1", a1, p1))
    host1.events.resource("pop3", "online", timeout=30)

    # mail2 is down: the message for carol waits in mail1's queue
    with smtplib.SMTP(a1, p1["smtp"], timeout=10) as c:
        c.sendmail("x@elsewhere.test", [CAROL, ALICE], b"Subject: hop\r\n\r\nhello\r\n")
    assert pop3_count(a1, p1["pop3"], ALICE) == 1
    time.sleep(0.5)

    host2 = start_host(spec(tmp_path, "mail2", a2, p2))
    host2.events.resource("pop3", "online", timeout=30)
    assert eventually(lambda: pop3_count(a2, p2["pop3"], CAROL) == 1)

    # the other way round, and a live removal of pop3 from mail2 (smtp keeps serving)
    with smtplib.SMTP(a2, p2["smtp"], timeout=10) as c:
        c.sendmail("y@elsewhere.test", [ALICE], b"Subject: back\r\n\r\nhi\r\n")
    assert eventually(lambda: pop3_count(a1, p1["pop3"], ALICE) == 2)
    without_pop3 = spec(tmp_path, "mail2", a2, p2, pop3=False)
    host2.send({"cmd": "update", "spec": without_pop3})
    host2.events.resource("pop3", "offline", timeout=30)
    with pytest.raises(OSError):
        pop3_count(a2, p2["pop3"], CAROL)
    with smtplib.SMTP(a2, p2["smtp"], timeout=10) as c:
        assert c.noop()[0] == 250


@pytest.mark.timeout(90)
def test_submission_with_the_directory(tmp_path: Path, start_host: StartHost) -> None:
    add_users(tmp_path, {ALICE: "mail1", CAROL: "mail2"}, {f"al@{DOMAIN}": ALICE})
    a1, a2 = addresses()
    p1, p2 = ports(a1), ports(a2)
    publish_config(tmp_path, {"mail1": p1, "mail2": p2})
    host1 = start_host(spec(tmp_path, "mail1", a1, p1))
    host2 = start_host(spec(tmp_path, "mail2", a2, p2))
    host1.events.resource("pop3", "online", timeout=30)
    host2.events.resource("pop3", "online", timeout=30)

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(a1, p1["submission"], timeout=10) as c:
        c.starttls(context=ctx)
        c.login(ALICE, PASSWORD)
        assert c.sendmail(f"al@{DOMAIN}", [CAROL, ALICE], b"Subject: real\r\n\r\nhi\r\n") == {}
        assert c.mail(CAROL)[0] == 553  # not alice's address
    assert pop3_count(a1, p1["pop3"], ALICE) == 1
    assert eventually(lambda: pop3_count(a2, p2["pop3"], CAROL) == 1)
    tracking = list((tmp_path / "data" / "disks" / "mail1" / "tracking").glob("*.jsonl"))
    assert tracking and json.loads(tracking[0].read_text().splitlines()[0])["sender"]
