"""Private files: after `clustermail up` has run mail, nothing in the data directory is
readable by other users; a data directory others can write is refused."""

from __future__ import annotations

import imaplib
import json
import os
import signal
import smtplib
import stat
from pathlib import Path

from tests.e2e.harness import cluster_toml, free_addresses, mail_port
from tests.support.local_up import cli, read_until, start_up


def loose_umask() -> None:
    os.umask(0o022)  # what a shell usually has: clustermail must not rely on it


def not_private(data: Path) -> list[str]:
    """Every file and folder under ``data`` that group or others can access."""
    found = []
    for path in [data, *data.rglob("*")]:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            found.append(f"{path.relative_to(data)} {stat.S_IMODE(st.st_mode):04o}")
    return found


def test_up_keeps_everything_private(tmp_path: Path) -> None:
    base, port = free_addresses()
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "cluster.toml").write_text(cluster_toml(base, port, nodes=2, servers=1, mail=True))
    (data / "cluster.toml").chmod(0o600)  # the administrator's file (`up` writes its own 0600)
    up = start_up(data, preexec_fn=loose_umask)
    try:
        out = read_until(up, "Ctrl-C stops the cluster")
        assert "took group and others' access away from 1 file(s) and folder(s)" in out
        password = json.loads((data / "passwords.json").read_text())["alice@example.test"]
        with smtplib.SMTP(f"{base}.11", mail_port(port, "smtp"), timeout=10) as smtp:
            smtp.sendmail("someone@example.net", ["alice@example.test"],
                          b"Subject: private\r\n\r\nfor alice only\r\n")
        with imaplib.IMAP4(f"{base}.11", mail_port(port, "imap"), timeout=10) as imap:
            imap.login("alice@example.test", password)
            imap.select("INBOX")
            assert imap.search(None, "ALL")[1] == [b"1"]
        # While running: the databases' -wal and -shm files exist, and are private too.
        names = {p.name for p in data.rglob("*")}
        assert {"cluster.db-wal", "cluster.db-shm", "DB1.sqlite-wal", "DB1.sqlite-shm",
                "queue.sqlite"} <= names, sorted(names)
        assert not_private(data) == []
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
        assert "stopped." in rest, rest
        assert not_private(data) == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_a_data_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    for command in (["up"], ["node", "run", "--name", "node1"]):
        run = cli(data, *command)
        assert run.returncode == 1, run
        assert run.stderr == (
            f"clustermail: refusing to use the data directory: the data directory {data} is "
            f"writable by group and others (mode 0777): chmod go-w {data}\n"), run.stderr
        assert run.stdout == ""
    assert stat.S_IMODE(data.stat().st_mode) == 0o777
    assert list(data.iterdir()) == []  # nothing written into it
