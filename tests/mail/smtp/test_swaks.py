"""Debian's swaks against the SMTP service: TLS, AUTH, relay denial, size, pipelining."""

from __future__ import annotations

from pathlib import Path

from clustermail.mail.smtp.policy import SmtpLimits
from tests.support.mail_fakes import (
    DOMAIN,
    PASSWORD,
    FakeDirectory,
    Running,
    require_tool,
    run_tool,
    start_smtp,
)

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"


def count(s: Running, address: str) -> int:
    return len(s.mail_store.store.database("SG1", "DB1").list_messages(address, "INBOX"))


async def test_swaks_starttls_auth_and_pipelining(smtp: Running) -> None:
    swaks = require_tool("swaks", "swaks")
    base = [swaks, "--server", smtp.address, "--helo", "client.test", "--timeout", "20"]
    code, out = await run_tool(*base, "--port", str(smtp.ports.submission), "--tls",
                               "--auth", "PLAIN", "--auth-user", ALICE,
                               "--auth-password", PASSWORD, "--from", ALICE, "--to", BOB)
    assert code == 0, out[-3000:]
    assert "235 2.7.0" in out and "250 2.0.0 Ok: queued as" in out
    code, out = await run_tool(*base, "--port", str(smtp.ports.submissions), "--tlsc",
                               "--auth", "LOGIN", "--auth-user", BOB,
                               "--auth-password", PASSWORD, "--from", BOB, "--to", ALICE)
    assert code == 0, out[-3000:]
    code, out = await run_tool(*base, "--port", str(smtp.ports.inbound), "--pipeline",
                               "--from", "x@elsewhere.test", "--to", ALICE)
    assert code == 0, out[-3000:]
    assert "PIPELINING" in out
    assert count(smtp, BOB) == 1 and count(smtp, ALICE) == 2


async def test_swaks_relay_denied_and_bad_login(smtp: Running) -> None:
    swaks = require_tool("swaks", "swaks")
    base = [swaks, "--server", smtp.address, "--helo", "client.test", "--timeout", "20"]
    code, out = await run_tool(*base, "--port", str(smtp.ports.inbound),
                               "--from", "x@elsewhere.test", "--to", "victim@other.test")
    assert code != 0 and "554 5.7.1" in out, out[-3000:]
    code, out = await run_tool(*base, "--port", str(smtp.ports.submission), "--tls",
                               "--auth", "PLAIN", "--auth-user", ALICE,
                               "--auth-password", "wrong", "--from", ALICE, "--to", BOB)
    assert code != 0 and "535 5.7.8" in out, out[-3000:]


async def test_swaks_size_limit(tmp_path: Path, directory: FakeDirectory) -> None:
    swaks = require_tool("swaks", "swaks")
    s = await start_smtp(tmp_path / "d", directory, limits=SmtpLimits(message_size_limit=20_000))
    try:
        code, out = await run_tool(swaks, "--server", s.address, "--port",
                                   str(s.ports.inbound), "--from", "x@elsewhere.test",
                                   "--to", ALICE, "--body", ("y" * 70 + "\n") * 450,
                                   "--timeout", "20")
        assert code != 0 and "552 5.3.4" in out, out[-3000:]
        assert "SIZE 20000" in out
        assert count(s, ALICE) == 0
    finally:
        await s.stop()
        s.mail_store.close()
