"""The POP3 session as a pure state machine: no sockets, no store, no clock.

:meth:`Pop3Session.handle` takes one command line and returns actions for the shell:
:class:`Reply` (bytes to send), :class:`StartTls`, :class:`Authenticate`,
:class:`Retrieve` (a message's bytes are needed), :class:`Update` (apply DELE at QUIT)
and :class:`Close`. The shell performs them and feeds results back
(:meth:`login_succeeded`, :meth:`login_failed`, :meth:`message`, :meth:`updated`).
Every malformed line gets ``-ERR`` and the session stays usable.
"""

from __future__ import annotations

import binascii
import enum
import re
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_LINE = 2048  # RFC 2449 allows 255 octets per command; AUTH responses run longer
MAX_ARG_DIGITS = 10
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")  # control characters other than TAB
#: A plain ``RETR n`` line: :meth:`Pop3Session.retrieve_now` takes it without the general
#: parse (any other spelling, such as extra spaces, goes through :meth:`Pop3Session.handle`).
_PLAIN_RETR = re.compile(rb"RETR ([0-9]{1,%d})\r?\n" % MAX_ARG_DIGITS, re.IGNORECASE)


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"  # QUIT received; closing


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """STLS was asked for. With client input already waiting (pipelined after STLS, or
    injected), answer :meth:`Pop3Session.stls_refused` and stay in plaintext; else answer
    :meth:`Pop3Session.stls_ready`, send nothing more in plaintext, upgrade, then call
    :meth:`Pop3Session.tls_started`."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Retrieve:
    uid: int
    size: int
    top_lines: int | None  # None: the whole message (RETR); else TOP's line count


@dataclass(frozen=True, slots=True)
class Update:
    deleted_uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Close:
    pass


Action = Reply | StartTls | Authenticate | Retrieve | Update | Close


@dataclass(frozen=True, slots=True)
class Maildrop:
    """The INBOX as the session sees it: fixed for the session (RFC 1939)."""

    uidvalidity: int
    uids: tuple[int, ...]
    sizes: tuple[int, ...]


@dataclass
class Pop3Settings:
    hostname: str = "localhost"
    tls_available: bool = True  # STLS may be offered (a certificate is there)
    plaintext_allowed: bool = False  # USER/PASS/AUTH before TLS (loopback demo only)
    implementation: str = "clustermail"


def ok(text: str = "") -> Reply:
    return Reply(f"+OK {text}".rstrip().encode("utf-8", "replace") + b"\r\n")


def err(text: str, code: str | None = None) -> Reply:
    prefix = f"[{code}] " if code else ""
    return Reply(f"-ERR {prefix}{text}".encode("utf-8", "replace") + b"\r\n")


def multiline(first: str, lines: list[str]) -> Reply:
    body = "".join(f"{line}\r\n" for line in lines)
    return Reply(f"+OK {first}\r\n{body}.\r\n".encode("utf-8", "replace"))


#: A bare CR, or a CRLF before a dot (a line to stuff): the first CR that needs work.
#: Every pattern here begins with one literal byte, which the regular-expression engine
#: skips to without trying the pattern at each position.
_CR_WORK = re.compile(rb"\r(?:\n\.|(?!\n))")
_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"\n(?<!\r\n)")


def _crlf_stuffed(message: bytes, stored: bool) -> bytes | None:
    """``message`` with a dot doubled after every CRLF that one follows, when every CR
    and LF in it is part of a CRLF; else None. No copy for the usual message (CRLF
    lines, none starting with a dot). ``stored``: the message comes from the store,
    which keeps no bare LF (every body is CRLF-normalized before it is written), so the
    scan for one is left out — one scan in C per RETR instead of two."""
    if not stored and _BARE_LF.search(message) is not None:
        return None
    found = _CR_WORK.search(message)
    if found is None:
        return message
    if found.end() - found.start() == 1 or _BARE_CR.search(message, found.end()) is not None:
        return None  # a bare CR, here or after the first line to stuff
    if stored and message.count(b"\n") != message.count(b"\r\n"):
        return None  # a bare LF where the store promised none: line by line, exactly
    return message.replace(b"\r\n.", b"\r\n..")


def dot_stuff(message: bytes, top_lines: int | None = None, head: bytes = b"",
              *, stored: bool = False) -> bytes:
    """The message as a multi-line response body: CRLF lines, leading dots doubled,
    the terminating ``.CRLF`` added, all after ``head`` (the status line). With
    ``top_lines``: the header, the blank line and that many body lines (TOP).
    ``stored``: the message is the store's (no bare LF, see :func:`_crlf_stuffed`); a
    bare LF not before a dot is then sent as it is."""
    body = _crlf_stuffed(message, stored) if top_lines is None else None
    if body is not None:
        # The common case (stored messages have CRLF line endings): no per-line work,
        # and one copy of the message (the join).
        return b"".join((
            head,
            b"." if body.startswith(b".") else b"",
            body,
            b"\r\n.\r\n" if body and not body.endswith(b"\r\n") else b".\r\n",
        ))
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if top_lines is not None:
        try:
            blank = lines.index(b"")
            lines = lines[: blank + 1 + top_lines]
        except ValueError:
            pass  # no body: the whole header
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return head + b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


@dataclass
class Pop3Session:
    settings: Pop3Settings
    tls: bool = False
    state: State = State.AUTHORIZATION
    user: str | None = None
    maildrop: Maildrop | None = None
    deleted: set[int] = field(default_factory=set)  # 1-based message numbers
    _auth_pending: bool = False  # AUTH PLAIN sent without initial response: "+ " was sent
    _busy: bool = False  # an Authenticate/Retrieve/Update is being performed by the shell
    #: retrieve_now's answers by message number (the maildrop is fixed for the session):
    #: building a frozen dataclass costs more than the rest of the command's parse.
    _retrieves: dict[int, Retrieve] = field(default_factory=dict)

    # ---------------------------------------------------------------- greeting & caps

    def waits_in_transaction(self) -> bool:
        """Logged in, and no action is being performed by the shell."""
        return self.state is State.TRANSACTION and not self._busy and not self._auth_pending

    def greeting(self) -> Reply:
        return ok(f"{self.settings.hostname} POP3 server ready")

    def _login_allowed(self) -> bool:
        return self.tls or self.settings.plaintext_allowed

    def capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self._login_allowed():
                caps += ["USER", "SASL PLAIN"]
            if self.settings.tls_available and not self.tls:
                caps.append("STLS")
        caps.append(f"IMPLEMENTATION {self.settings.implementation}")
        return caps

    # ---------------------------------------------------------------- input

    def handle(self, line: bytes) -> list[Action]:
        """One command line (with or without its line ending)."""
        if self.state is State.UPDATE:
            return []
        if len(line) > MAX_LINE:
            return [err("line too long")]
        text_b = line.rstrip(b"\r\n")
        if self._auth_pending:
            self._auth_pending = False
            return self._plain_response(text_b)
        try:
            text = text_b.decode("ascii")
        except UnicodeDecodeError:
            return [err("commands are ASCII")]
        if not text.strip():
            return [err("empty command")]
        if _CONTROL.search(text):
            return [err("control characters in command")]
        keyword, _, rest = text.strip().partition(" ")
        keyword = keyword.upper()
        args = rest.split()
        if keyword == "QUIT":
            return self._quit(args)
        if keyword == "CAPA":
            return [multiline("Capability list follows", self.capabilities())]
        if self.state is State.AUTHORIZATION:
            return self._authorization(keyword, args, rest)
        return self._transaction(keyword, args)

    # ---------------------------------------------------------------- AUTHORIZATION

    def _authorization(self, keyword: str, args: list[str], rest: str) -> list[Action]:
        if keyword == "STLS":
            if args:
                return [err("STLS takes no arguments")]
            if self.tls:
                return [err("TLS is already active")]
            if not self.settings.tls_available:
                return [err("TLS is not available")]
            return [StartTls()]
        if keyword in ("USER", "PASS", "AUTH", "APOP") and not self._login_allowed():
            return [err("Plaintext authentication is not allowed without TLS; use STLS",
                        "AUTH")]
        if keyword == "USER":
            if len(args) != 1:
                return [err("USER needs exactly one argument: the mailbox name")]
            self.user = args[0]
            return [ok("send PASS")]
        if keyword == "PASS":
            if self.user is None:
                return [err("send USER first")]
            if not rest:
                return [err("PASS needs the password")]
            user, self.user = self.user, None
            # The password is everything after "PASS " (it may contain spaces).
            return self._login(user, rest)
        if keyword == "AUTH":
            if not args:
                return [multiline("SASL mechanisms follow", ["PLAIN"])]
            if args[0].upper() != "PLAIN" or len(args) > 2:
                return [err("unsupported mechanism; use AUTH PLAIN")]
            if len(args) == 1:
                self._auth_pending = True
                return [Reply(b"+ \r\n")]
            return self._plain_response(args[1].encode())
        if keyword == "APOP":
            return [err("APOP is not supported; use USER/PASS or AUTH PLAIN")]
        if keyword in _TRANSACTION_COMMANDS:
            return [err(f"{keyword} is not allowed before login")]
        return [err(f"unknown command {keyword[:20]!r}")]

    def _plain_response(self, data: bytes) -> list[Action]:
        if data == b"*":
            return [err("authentication cancelled")]
        try:
            raw = b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return [err("cannot decode the response (base64)")]
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            return [err("PLAIN needs authzid NUL authcid NUL password")]
        authz, user, password = (p.decode("utf-8", "replace") for p in parts)
        if authz and authz != user:
            return [err("authorization identity must be the login name", "AUTH")]
        return self._login(user, password)

    def _login(self, user: str, password: str) -> list[Action]:
        self._busy = True
        return [Authenticate(user, password)]

    def login_succeeded(self, maildrop: Maildrop) -> list[Action]:
        self._busy = False
        self.maildrop = maildrop
        self.state = State.TRANSACTION
        n, size = self._stat()
        return [ok(f"maildrop has {n} messages ({size} octets)")]

    def login_failed(self, text: str, code: str = "AUTH") -> list[Action]:
        self._busy = False
        return [err(text, code)]

    def stls_ready(self) -> Reply:
        return ok("Begin TLS negotiation")

    def stls_refused(self) -> Reply:
        # RFC 2595 §4: nothing may follow STLS before the handshake; what did was sent
        # in the clear and might be an attacker's (CVE-2011-0411), so TLS is not started
        # under it. The waiting input is read as plaintext commands, as it was sent.
        return err("input after STLS; send STLS alone, then wait for the answer")

    def tls_started(self) -> None:
        self.tls = True
        self.user = None  # RFC 2595: forget anything learned before TLS

    # ---------------------------------------------------------------- TRANSACTION

    def _stat(self) -> tuple[int, int]:
        md = self.maildrop
        assert md is not None
        live = [i for i in range(len(md.uids)) if i + 1 not in self.deleted]
        return len(live), sum(md.sizes[i] for i in live)

    def _number(self, arg: str) -> int | str:
        """A message number, or the reason it is not one."""
        md = self.maildrop
        assert md is not None
        if not arg.isdigit() or len(arg) > MAX_ARG_DIGITS:
            return f"{arg[:20]!r} is not a message number"
        n = int(arg)
        if not 1 <= n <= len(md.uids):
            return f"no message {n}"
        if n in self.deleted:
            return f"message {n} is deleted"
        return n

    def _transaction(self, keyword: str, args: list[str]) -> list[Action]:
        md = self.maildrop
        assert md is not None
        handler = _TRANSACTION_COMMANDS.get(keyword)
        if handler is None:
            if keyword in ("USER", "PASS", "AUTH", "APOP", "STLS"):
                return [err(f"{keyword} is not allowed after login")]
            return [err(f"unknown command {keyword[:20]!r}")]
        low, high = handler
        if not low <= len(args) <= high:
            return [err(f"{keyword}: wrong number of arguments")]
        return getattr(self, f"_cmd_{keyword.lower()}")(args)  # type: ignore[no-any-return]

    def _cmd_stat(self, args: list[str]) -> list[Action]:
        n, size = self._stat()
        return [ok(f"{n} {size}")]

    def _cmd_list(self, args: list[str]) -> list[Action]:
        md = self.maildrop
        assert md is not None
        count, size = self._stat()
        return self._per_message(args, lambda i: str(md.sizes[i]),
                                 f"{count} messages ({size} octets)")

    def _cmd_uidl(self, args: list[str]) -> list[Action]:
        md = self.maildrop
        assert md is not None
        return self._per_message(args, lambda i: f"{md.uidvalidity}.{md.uids[i]}",
                                 "unique-id listing follows")

    def _per_message(
        self, args: list[str], value: Callable[[int], str], title: str
    ) -> list[Action]:
        """LIST and UIDL: ``n value`` for message ``n`` when given, else for every
        message not marked deleted (``value`` takes a 0-based index)."""
        md = self.maildrop
        assert md is not None
        if args:
            n = self._number(args[0])
            if isinstance(n, str):
                return [err(n)]
            return [ok(f"{n} {value(n - 1)}")]
        lines = [f"{i + 1} {value(i)}" for i in range(len(md.uids)) if i + 1 not in self.deleted]
        return [multiline(title, lines)]

    def _cmd_retr(self, args: list[str]) -> list[Action]:
        n = self._number(args[0])
        if isinstance(n, str):
            return [err(n)]
        md = self.maildrop
        assert md is not None
        self._busy = True
        return [Retrieve(md.uids[n - 1], md.sizes[n - 1], None)]

    def _cmd_top(self, args: list[str]) -> list[Action]:
        n = self._number(args[0])
        if isinstance(n, str):
            return [err(n)]
        if not args[1].isdigit() or len(args[1]) > MAX_ARG_DIGITS:
            return [err(f"{args[1][:20]!r} is not a line count")]
        md = self.maildrop
        assert md is not None
        self._busy = True
        return [Retrieve(md.uids[n - 1], md.sizes[n - 1], int(args[1]))]

    def retrieve_now(self, line: bytes, max_size: int) -> Retrieve | None:
        """:meth:`handle`'s answer to a plain ``RETR n`` line, taken the short way (the
        shell's per-command path): the same :class:`Retrieve` when the session waits in
        TRANSACTION and message ``n`` is there, not deleted and at most ``max_size``
        octets. None for anything else, which :meth:`handle` then answers."""
        match = _PLAIN_RETR.fullmatch(line)
        if match is None or not self.waits_in_transaction():
            return None
        md = self.maildrop
        assert md is not None
        n = int(match[1])
        if not 1 <= n <= len(md.uids) or n in self.deleted or md.sizes[n - 1] > max_size:
            return None
        retrieve = self._retrieves.get(n)
        if retrieve is None:
            retrieve = self._retrieves[n] = Retrieve(md.uids[n - 1], md.sizes[n - 1], None)
        self._busy = True
        return retrieve

    def message(self, retrieve: Retrieve, raw: bytes | None) -> list[Action]:
        """The shell fetched the message (None: it has gone, e.g. expunged over IMAP)."""
        return [Reply(self.message_reply(retrieve, raw))]

    def message_reply(self, retrieve: Retrieve, raw: bytes | None) -> bytes:
        """:meth:`message`'s reply as bytes."""
        self._busy = False
        if raw is None:
            return err("message was removed by another session", "SYS/PERM").data
        return dot_stuff(raw, retrieve.top_lines, b"+OK %d octets\r\n" % retrieve.size,
                         stored=True)

    def _cmd_dele(self, args: list[str]) -> list[Action]:
        n = self._number(args[0])
        if isinstance(n, str):
            return [err(n)]
        self.deleted.add(n)
        return [ok(f"message {n} deleted")]

    def _cmd_noop(self, args: list[str]) -> list[Action]:
        return [ok()]

    def _cmd_rset(self, args: list[str]) -> list[Action]:
        self.deleted.clear()
        n, size = self._stat()
        return [ok(f"maildrop has {n} messages ({size} octets)")]

    # ---------------------------------------------------------------- QUIT / UPDATE

    def _quit(self, args: list[str]) -> list[Action]:
        if args:
            return [err("QUIT takes no arguments")]
        if self.state is State.AUTHORIZATION:
            self.state = State.UPDATE
            return [ok(f"{self.settings.hostname} POP3 server signing off"), Close()]
        md = self.maildrop
        assert md is not None
        self.state = State.UPDATE
        uids = tuple(md.uids[n - 1] for n in sorted(self.deleted))
        if not uids:
            return [ok(f"{self.settings.hostname} POP3 server signing off"), Close()]
        self._busy = True
        return [Update(uids)]

    def updated(self, error: str | None) -> list[Action]:
        self._busy = False
        if error is not None:
            return [err(f"some deleted messages not removed: {error}", "SYS/TEMP"), Close()]
        n, _ = self._stat()
        return [ok(f"{self.settings.hostname} POP3 server signing off ({n} messages left)"),
                Close()]


# keyword -> (min args, max args)
_TRANSACTION_COMMANDS: dict[str, tuple[int, int]] = {
    "STAT": (0, 0),
    "LIST": (0, 1),
    "UIDL": (0, 1),
    "RETR": (1, 1),
    "TOP": (2, 2),
    "DELE": (1, 1),
    "NOOP": (0, 0),
    "RSET": (0, 0),
}
