"""Enabling and disabling POP3 on a running virtual server (`resource add|remove`):
live, without restarting the virtual server's other resources."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.harness import (
    SEED,
    LocalCluster,
    cluster_toml,
    free_addresses,
    mail_port,
    owners,
    vs_of,
)


def answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            return s.recv(100).startswith((b"+OK", b"220", b"* OK"))
    except OSError:
        return False


async def test_pop3_removed_and_added_live(tmp_path: Path) -> None:
    base, port = free_addresses()
    async with LocalCluster(tmp_path, f"sqlite://{tmp_path}/cluster.db",
                            cluster_toml(base, port, mail=True)) as c:
        c.start_all()
        status = await c.wait_for(lambda s: owners(s) == SEED, timeout=60,
                                  what="the initial layout")
        host = vs_of(status, "mail1")["pid"]
        address = f"{base}.11"
        pop3, smtp = mail_port(port, "pop3"), mail_port(port, "smtp")
        assert answers(address, pop3) and answers(address, smtp)

        refused = c.cli("resource", "remove", "mail1", "store")
        assert refused.returncode == 1 and "depend on mail1/store" in refused.stderr

        out = c.cli("resource", "remove", "mail1", "pop3")
        assert out.returncode == 0, out.stderr
        status = await c.wait_for(lambda s: "pop3" not in vs_of(s, "mail1")["resources"]
                                  or vs_of(s, "mail1")["resources"]["pop3"] == "offline",
                                  what="pop3 gone")
        assert not answers(address, pop3)
        assert answers(address, smtp)
        assert vs_of(status, "mail1")["pid"] == host  # the rest kept running

        out = c.cli("resource", "add", "mail1", "pop3", "-p", f"port={pop3}",
                    "-p", f"tls_port={mail_port(port, 'pop3s')}",
                    "-p", "allow_plaintext_on_loopback=true")
        assert out.returncode == 0, out.stderr
        status = await c.wait_for(
            lambda s: vs_of(s, "mail1")["resources"].get("pop3") == "online", what="pop3 back")
        assert answers(address, pop3)
        assert vs_of(status, "mail1")["pid"] == host
        assert owners(status) == SEED

        dup = c.cli("resource", "add", "mail1", "pop3")
        assert dup.returncode == 1 and "already has a resource named 'pop3'" in dup.stderr
