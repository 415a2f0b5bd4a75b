"""A private Dovecot IMAP server on loopback, as the reference the suite compares against.

Needs Debian's dovecot-imapd (scripts/install-system-deps.sh installs it). The
configuration is written to a temporary directory (no systemd needed): passwd-file
passdb with PLAIN passwords, a static userdb (uid mail), maildir with the "/"
hierarchy separator and the same special-use folders our store creates, all
subscribed. The master daemonizes; it is stopped by the PID in its base_dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from tests.support.ports import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
SPECIAL = (
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


def available() -> bool:
    return Path(DOVECOT).exists()


class Dovecot:
    def __init__(self, users: Iterable[str], password: str) -> None:
        # Its own directory right under /tmp: Dovecot's unprivileged processes must
        # traverse every ancestor, and pytest's temporary directories are 0700.
        root = Path(tempfile.mkdtemp(prefix="clustermail-dovecot-"))
        self.root = root
        self.port = free_port()
        self.password = password
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)  # the mail user must reach its maildir under here
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(exist_ok=True)
        os.chmod(root / "mail", 0o777)
        (root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{password}::::::\n" for u in users))
        mailboxes = "\n".join(
            f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}"
            for name, use in SPECIAL
        )
        (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 8
mail_location = maildir:{root}/mail/%u:LAYOUT=fs
mail_fsync = always
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={root}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox INBOX {{
    auto = subscribe
  }}
{mailboxes}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 64
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
login_trusted_networks = 127.0.0.0/8
""")

    def start(self) -> None:
        env = dict(os.environ, TZ="UTC")
        # The daemon's children inherit stdout/stderr: pipes would never reach EOF.
        subprocess.run(
            [DOVECOT, "-c", str(self.root / "dovecot.conf")],
            check=True,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start: {self.log()}")

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        pidfile = self.root / "run" / "master.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
