"""Replays scripted IMAP sessions against a server and normalises what it answers.

A script (``corpus/scripts/*.imap``) is one command per line, without tag:

* ``# setup: default`` (or ``empty``, ``folders``) chooses the mailbox it starts with;
  other ``#`` lines are comments;
* ``@2 COMMAND`` runs on the second connection (up to ``@3``; the default is 1);
  each connection logs in before the script starts;
* ``{{msg:NAME}}`` inserts the corpus message ``NAME`` as a LITERAL+ literal;
* ``{{crlf}}`` inserts CRLF (a literal's header ends a line);
* ``!raw TEXT`` sends TEXT verbatim as a line and reads one response line;
* ``IDLE`` on a connection starts idling; the next ``DONE`` on it ends it and
  reads the whole answer (the server syncs before it answers DONE);
* ``!sleep SECONDS`` waits (Dovecot notices other sessions' changes through
  inotify, a moment later).

Every script runs with a fresh user whose mailbox is filled the same way on
both servers (APPEND of the same bytes, flags and internal dates).
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
MESSAGES = CORPUS / "messages"
SCRIPTS = CORPUS / "scripts"
PASSWORD = "secret"

#: Flags the default setup gives the corpus messages, by file-name prefix.
SETUP_FLAGS = {
    "01": "(\\Seen)",
    "03": "(\\Seen \\Flagged)",
    "04": "(\\Answered \\Seen)",
    "05": "(\\Seen)",
    "07": "($Forwarded)",
    "08": "(\\Deleted)",
    "09": "(\\Draft)",
    "12": "(\\Deleted \\Seen)",
    "13": "(\\Flagged)",
}


def message_bytes(name: str) -> bytes:
    """A corpus message with CRLF line ends, as IMAP sends and stores messages."""
    raw = (MESSAGES / name).read_bytes()
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def message_names() -> list[str]:
    return sorted(p.name for p in MESSAGES.glob("*.eml"))


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def setup_commands(kind: str) -> list[bytes]:
    out: list[bytes] = []
    if kind == "empty":
        return out
    for i, name in enumerate(message_names(), 1):
        flags = SETUP_FLAGS.get(name[:2], "()")
        date = f'"{i:02d}-Feb-2024 10:{i:02d}:00 +0000"'
        out.append(f"APPEND INBOX {flags} {date} ".encode() + literal(message_bytes(name)))
    if kind == "folders":
        for folder in ("Work", "Work/Projects", "Lists/Example", "Caf&AOk-"):
            out.append(f'CREATE "{folder}"'.encode())
        for i, name in enumerate(message_names()[:4], 1):
            out.append(
                f'APPEND "Work/Projects" () "{i:02d}-Mar-2024 08:00:00 +0000" '.encode()
                + literal(message_bytes(name))
            )
        out.append(b"SUBSCRIBE Work")
    return out


# --------------------------------------------------------------------------- client


class Connection:
    """A blocking IMAP client that keeps every response line, literals inline."""

    def __init__(self, host: str, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.greeting = self.read_line()

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def read_line(self) -> bytes:
        line = self.file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        while True:
            m = re.search(rb"\{(\d+)\}\r\n\Z", line)
            if m is None:
                return line.rstrip(b"\r\n")
            data = self.file.read(int(m.group(1)))
            rest = self.file.readline()
            line = line + data + rest

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, tag: str, text: bytes) -> list[bytes]:
        try:
            self.send(tag.encode() + b" " + text + b"\r\n")
        except OSError as exc:
            return [f"<connection closed: {type(exc).__name__}>".encode()]
        return self.until_tagged(tag)

    def until_tagged(self, tag: str) -> list[bytes]:
        out = []
        prefix = tag.encode() + b" "
        while True:
            try:
                line = self.read_line()
            except (ConnectionError, OSError) as exc:
                out.append(f"<connection closed: {type(exc).__name__}>".encode())
                return out
            out.append(line)
            if line.startswith(prefix):
                return out


def login(host: str, port: int, user: str) -> Connection:
    conn = Connection(host, port)
    lines = conn.command("L", f'LOGIN "{user}" "{PASSWORD}"'.encode())
    if not lines[-1].startswith(b"L OK"):
        raise RuntimeError(f"login of {user} failed: {lines!r}")
    return conn


@dataclass
class Script:
    name: str
    setup: str
    steps: list[tuple[int, bytes]] = field(default_factory=list)


def load_script(path: Path) -> Script:
    script = Script(path.stem, "default")
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.rstrip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*setup:\s*(\w+)", line)
            if m:
                script.setup = m.group(1)
            continue
        session = 1
        m = re.match(r"@(\d) (.*)", line)
        if m:
            session, line = int(m.group(1)), m.group(2)
        data = line.encode("utf-8")
        data = re.sub(
            rb"\{\{msg:([^}]+)\}\}", lambda m: literal(message_bytes(m[1].decode())), data
        )
        data = data.replace(b"{{crlf}}", b"\r\n")
        script.steps.append((session, data))
    return script


def run_script(host: str, port: int, user: str, script: Script) -> list[str]:
    """Set up the user's mailbox, replay the script; the transcript (not yet normalised)."""
    setup = login(host, port, user)
    for i, cmd in enumerate(setup_commands(script.setup)):
        lines = setup.command(f"S{i}", cmd)
        if not lines[-1].startswith(f"S{i} OK".encode()):
            raise RuntimeError(f"setup command failed: {cmd[:60]!r} → {lines[-1]!r}")
    setup.command("S-out", b"LOGOUT")
    setup.close()
    conns: dict[int, Connection] = {}
    idling: dict[int, str] = {}
    transcript: list[str] = []
    try:
        for n, (session, data) in enumerate(script.steps, 1):
            if session not in conns:
                conns[session] = login(host, port, user)
            conn = conns[session]
            tag = f"t{n}"
            show = data if len(data) < 300 else data[:300] + b"..."
            if data.startswith(b"!sleep "):
                time.sleep(float(data[7:]))
                continue
            if data.startswith(b"!raw "):
                transcript.append(f"{session}< {_text(show[5:])}")
                conn.send(data[5:] + b"\r\n")
                lines = [conn.read_line()]
            elif data.upper() == b"DONE" and session in idling:
                transcript.append(f"{session}< DONE")
                conn.send(b"DONE\r\n")
                lines = conn.until_tagged(idling.pop(session))
            elif data.upper() == b"IDLE":
                transcript.append(f"{session}< {tag} IDLE")
                conn.send(tag.encode() + b" IDLE\r\n")
                lines = [conn.read_line()]
                if lines[0].startswith(b"+"):
                    idling[session] = tag
            else:
                transcript.append(f"{session}< {tag} {_text(show)}")
                lines = conn.command(tag, data)
            transcript += [f"{session}> {_text(line)}" for line in lines]
    finally:
        for conn in conns.values():
            conn.close()
    return transcript


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")
