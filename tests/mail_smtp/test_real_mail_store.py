"""smtp and pop3 over the real mail_store resource and recipient directory, in two resource
hosts sharing one SQLite coordination store: submission with AUTH against the directory,
relaying to the other virtual server, POP3 there."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest

from clustermail.coord import open_store
from tests.mail_smtp.test_resource_hosts import eventually, pop3_count, ports, publish_config
from tests.rhost.conftest import StartHost
from tests.rhost.hostproc import FAST_POLICY

# The real directory and mail_store resource come from the directory branch; until they
# are merged this module has nothing to test against.
dirsupport = pytest.importorskip("tests.mail.dirsupport")

DOMAIN = "example.test"
ALICE, CAROL, PASSWORD = f"alice@{DOMAIN}", f"carol@{DOMAIN}", "pw-secret"


def spec(tmp: Path, vs: str, address: str, p: dict[str, int]) -> dict[str, Any]:
    res: list[dict[str, Any]] = [
        {"name": "ip", "type": "ip_address", "properties": {"address": address}},
        {"name": "name", "type": "network_name", "properties": {"name": vs},
         "depends_on": ["ip"]},
        {"name": "disk", "type": "disk", "properties": {"path": f"{tmp}/disks/{vs}"}},
        {"name": "store", "type": "mail_store", "depends_on": ["disk"]},
        {"name": "smtp", "type": "smtp", "depends_on": ["store", "ip"], "properties": {
            "port": p["smtp"], "submission_port": p["submission"],
            "submissions_port": p["submissions"], "retry_base": 0.2, "retry_max": 0.5,
            "queue_poll": 0.2}},
        {"name": "pop3", "type": "pop3", "depends_on": ["store", "ip"],
         "properties": {"port": p["pop3"], "tls_port": p["pop3s"],
                        "allow_plaintext_on_loopback": True}},
    ]
    for r in res:
        r.setdefault("depends_on", [])
        r["policy"] = FAST_POLICY
    return {"vs": vs, "node": "node1", "epoch": 1, "store": f"sqlite://{tmp}/cluster.db",
            "data_dir": str(tmp / "data"), "resources": res, "offline_resources": [],
            "plugins": ["clustermail.mail.resources"]}


async def users(url: str) -> None:
    store = await open_store(url)
    try:
        d = dirsupport.directory(store)
        await d.add_domain(DOMAIN)
        await d.add_mailbox(ALICE, password=PASSWORD, server="mail1")
        await d.add_mailbox(CAROL, password=PASSWORD, server="mail2")
        await d.add_alias(f"al@{DOMAIN}", ALICE)
    finally:
        await store.close()


@pytest.mark.timeout(90)
def test_submission_relay_and_pop3_with_the_real_directory(
    tmp_path: Path, start_host: StartHost
) -> None:
    p1, p2 = ports("127.0.0.11"), ports("127.0.0.12")
    publish_config(tmp_path, {"mail1": p1, "mail2": p2})
    asyncio.run(users(f"sqlite://{tmp_path}/cluster.db"))  # the mail stores create them
    host1 = start_host(spec(tmp_path, "mail1", "127.0.0.11", p1))
    host2 = start_host(spec(tmp_path, "mail2", "127.0.0.12", p2))
    host1.events.resource("pop3", "online", timeout=30)
    host2.events.resource("pop3", "online", timeout=30)

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.11", p1["submission"], timeout=10) as c:
        c.starttls(context=ctx)
        c.login(ALICE, PASSWORD)
        refused = c.sendmail(f"al@{DOMAIN}", [CAROL, ALICE],
                             b"Subject: real\r\n\r\nthrough the directory\r\n")
        assert refused == {}
        code, _ = c.mail(CAROL)  # not alice's address
        assert code == 553
    assert pop3_count("127.0.0.11", p1["pop3"], ALICE, PASSWORD) == 1
    assert eventually(lambda: pop3_count("127.0.0.12", p2["pop3"], CAROL, PASSWORD) == 1)
    tracking = list((tmp_path / "disks" / "mail1" / "tracking").glob("*.jsonl"))
    assert tracking and json.loads(tracking[0].read_text().splitlines()[0])["sender"]
