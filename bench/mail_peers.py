"""The reference servers of bench.mail as private instances in a temporary folder:
Postfix (to Dovecot over LMTP, or to a Maildir with virtual(8)) and Dovecot POP3.
Their configurations are written here; nothing system-wide is started or changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {t}/queue
data_directory = {t}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = bench.test
maillog_file = {t}/log/postfix.log
maillog_file_prefixes = {t}/log
smtputf8_enable = no
"""
POSTFIX_LMTP = """\
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
virtual_mailbox_maps = static:ok
"""
POSTFIX_VIRTUAL = """\
virtual_transport = virtual
virtual_mailbox_base = {t}/vmail
virtual_mailbox_maps = static:bench.test/u1/
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
"""

DOVECOT_LMTP = """\
protocols = lmtp
base_dir = {t}/run
state_dir = {t}/state
log_path = {t}/dovecot.log
ssl = no
first_valid_uid = 8
mail_location = maildir:{t}/mail/%d/%n/Maildir
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={t}/mail/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""

DOVECOT_POP3 = """\
protocols = pop3
listen = 127.0.0.1
base_dir = {t}/run
state_dir = {t}/state
log_path = {t}/dovecot.log
ssl = no
disable_plaintext_auth = no
first_valid_uid = 8
mail_location = maildir:{t}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {t}/passwd
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={t}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
}}
"""


def _folder(parent: Path, name: str) -> Path:
    t = parent / name
    t.mkdir(parents=True)
    os.chmod(t, 0o755)  # virtual(8) and Dovecot (uid mail) must enter it
    return t


def _run(cmd: list[str]) -> None:
    # Postfix reports to syslog only (there is none here); under `script` its errors reach us.
    line = " ".join(cmd)
    out = subprocess.run(["script", "-qc", line, "/dev/null"], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{line} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")


class Dovecot:
    def __init__(self, folder: Path, conf: str) -> None:
        self.folder = folder
        self.conf = folder / "dovecot.conf"
        self.conf.write_text(conf)
        for sub in ("run", "state", "mail", "home"):
            (folder / sub).mkdir(exist_ok=True)
        shutil.chown(folder / "mail", "mail", "mail")
        shutil.chown(folder / "home", "mail", "mail")

    def start(self, port: int) -> None:
        # Not under `script`: the daemon would be hung up with script's terminal.
        # Its output goes to log_path; pipes would be held open by the daemon.
        code = subprocess.run(["dovecot", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=60).returncode
        if code != 0:
            log = self.folder / "dovecot.log"
            raise RuntimeError(f"dovecot exited {code}: "
                               f"{log.read_text()[-2000:] if log.exists() else ''}")
        _wait_port(port)

    def stop(self) -> None:
        subprocess.run(["dovecot", "-c", str(self.conf), "stop"], capture_output=True,
                       timeout=30)


def dovecot_lmtp(parent: Path, port: int) -> Dovecot:
    t = _folder(parent, "dovecot-lmtp")
    return Dovecot(t, DOVECOT_LMTP.format(t=t, port=port))


def dovecot_pop3(parent: Path, port: int, user: str, password: str) -> Dovecot:
    t = _folder(parent, "dovecot-pop3")
    (t / "passwd").write_text(f"{user}:{password}\n")
    return Dovecot(t, DOVECOT_POP3.format(t=t, port=port))


class Postfix:
    def __init__(self, parent: Path, name: str, port: int, transport: str) -> None:
        t = self.folder = _folder(parent, name)
        for sub in ("data", "log", "vmail", "queue"):
            (t / sub).mkdir()
        shutil.chown(t / "data", "postfix")
        os.chown(t / "vmail", 5000, 5000)
        (t / "main.cf").write_text(POSTFIX_MAIN.format(t=t) + transport.format(t=t))
        master = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{port}"
                fields[4] = "n"  # no chroot
                line = "  ".join(fields[:8]) + ("  " + " ".join(fields[8:]) if fields[8:] else "")
            master.append(line)
        (t / "master.cf").write_text("\n".join(master) + "\n")
        self.port = port

    def start(self) -> None:
        _run(["postfix", "-c", str(self.folder), "check"])  # creates the queue's folders
        _run(["postfix", "-c", str(self.folder), "start"])
        _wait_port(self.port)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.folder), "stop"], capture_output=True,
                       timeout=60)

    def virtual_maildir(self) -> Path:
        return self.folder / "vmail" / "bench.test" / "u1" / "new"


def count_files(folder: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(folder))
    except FileNotFoundError:
        return 0


def _wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")
