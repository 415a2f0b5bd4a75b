"""Debian's fetchmail against the POP3 service: STLS, UIDL (keep + only new), deletion."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.mail_fakes import DOMAIN, PASSWORD, require_tool, run_tool
from tests.support.pop3_service import Pop3

ALICE = f"alice@{DOMAIN}"


def rcfile(tmp: Path, p: Pop3, *, keep: bool, implicit: bool = False) -> Path:
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    port = p.tls if implicit else p.plain
    tls = "ssl" if implicit else "sslproto 'TLS1.2+'"
    # Each message through the MDA into its own file (named by the shell's clock).
    mda = f"/bin/sh -c 'cat > {out}/msg.$(date +%s%N)'"
    text = (
        "set no bouncemail\n"
        f"poll {p.address} with proto POP3 and port {port} and uidl\n"
        f"  user '{ALICE}' there with password '{PASSWORD}' is 'root' here\n"
        f"  {tls} no sslcertck {'keep' if keep else 'nokeep fetchall'}\n"
        f"  mda \"{mda}\"\n"
    )
    path = tmp / "fetchmailrc"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


async def fetch(tmp: Path, rc: Path) -> tuple[int, str]:
    fetchmail = require_tool("fetchmail", "fetchmail")
    return await run_tool(
        fetchmail, "-f", str(rc), "--idfile", str(tmp / "fetchids"), "--nodetach",
        "--pidfile", str(tmp / "fetchmail.pid"), "-v", timeout=60,
    )


def fetched(tmp: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in (tmp / "out").iterdir())


async def test_fetchmail_uidl_keep_and_delete(pop3: Pop3, tmp_path: Path) -> None:
    for n in range(2):
        pop3.deliver(ALICE, f"Subject: m{n}\r\n\r\nbody {n}\r\n".encode())
    rc = rcfile(tmp_path, pop3, keep=True)
    code, out = await fetch(tmp_path, rc)
    assert code == 0, out[-3000:]
    assert "STLS" in out
    assert len(fetched(tmp_path)) == 2
    code, out = await fetch(tmp_path, rc)  # UIDL: nothing new, nothing fetched twice
    assert code == 1, out[-3000:]  # 1 = no mail
    assert len(fetched(tmp_path)) == 2
    pop3.deliver(ALICE, b"Subject: m2\r\n\r\nbody 2\r\n")
    code, out = await fetch(tmp_path, rc)
    assert code == 0, out[-3000:]
    assert len(fetched(tmp_path)) == 3
    assert any(b"body 2" in m for m in fetched(tmp_path))
    # Without keep, fetchmail deletes what it fetched: DELE applied at QUIT.
    code, out = await fetch(tmp_path, rcfile(tmp_path, pop3, keep=False, implicit=True))
    assert code in (0, 1), out[-3000:]
    db = pop3.mail_store.store.database("SG1", "DB1")
    assert len(db.list_messages(ALICE, "INBOX")) == 0
