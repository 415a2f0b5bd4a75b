"""Typed IMAP commands, as produced by :func:`clustermail.mail.imap.parser.parse_command`.

One frozen dataclass per command. Values are already decoded: mailbox names
are Unicode (modified UTF-7 undone, ``INBOX`` in any case made ``INBOX``),
flags have their canonical spelling (``\\Seen``), dates are ``datetime`` /
``date`` objects, literals are ``bytes``. Commands that have a ``UID`` form
carry ``uid: bool``. Fields for extensions we do not announce yet
(CONDSTORE, QRESYNC) have defaults, so adding them changes no caller.

In which session states a command is allowed, and the other rules the session
enforces, are in the command table (:mod:`clustermail.mail.imap.command_table`),
next to each command's handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

from clustermail.mail.imap.search import SearchKey
from clustermail.mail.imap.sequence import SequenceSet


@dataclass(frozen=True, slots=True)
class Command:
    """Every command has a tag; ``name`` is the command word as the RFC spells it."""

    tag: str

    name: ClassVar[str] = ""


# ----------------------------------------------------------------- any state


@dataclass(frozen=True, slots=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971. ``params`` is ``None`` for ``ID NIL``."""

    params: tuple[tuple[str, str | None], ...] | None
    name: ClassVar[str] = "ID"


# --------------------------------------------------------- not authenticated


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """``mechanism`` upper-cased; ``initial_response`` decoded (SASL-IR, ``=`` is ``b""``)."""

    mechanism: str
    initial_response: bytes | None = None
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True, slots=True)
class Login(Command):
    userid: str
    password: str
    name: ClassVar[str] = "LOGIN"

    def __repr__(self) -> str:  # never log a password
        return f"Login(tag={self.tag!r}, userid={self.userid!r}, password=<hidden>)"


# ---------------------------------------------------------------- authenticated


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT, or EXAMINE when ``read_only``; ``condstore`` for ``(CONDSTORE)``."""

    mailbox: str
    read_only: bool = False
    condstore: bool = False
    name: ClassVar[str] = "SELECT"

    @property
    def command_name(self) -> str:
        return "EXAMINE" if self.read_only else "SELECT"


@dataclass(frozen=True, slots=True)
class Create(Command):
    """``special_use``: RFC 6154 ``USE (\\Sent ...)`` attributes."""

    mailbox: str
    special_use: tuple[str, ...] = ()
    name: ClassVar[str] = "CREATE"


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True, slots=True)
class Rename(Command):
    old: str
    new: str
    name: ClassVar[str] = "RENAME"


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST, basic (RFC 3501) or extended (RFC 5258 / 6154 / 5819).

    ``selection``: upper-cased selection options (``SUBSCRIBED``, ``REMOTE``,
    ``RECURSIVEMATCH``, ``SPECIAL-USE``). ``returns``: upper-cased return
    options (``SUBSCRIBED``, ``CHILDREN``, ``SPECIAL-USE``, ``STATUS``), with
    the STATUS items in ``status_items``. ``extended`` is true when the client
    used any extended syntax, which allows extended response data.
    """

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False
    name: ClassVar[str] = "LIST"


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    reference: str
    pattern: str
    name: ClassVar[str] = "LSUB"


#: STATUS data items we parse (RFC 3501, CONDSTORE's HIGHESTMODSEQ, RFC 8438 SIZE,
#: RFC 9051 DELETED).
STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "DELETED"}
)


@dataclass(frozen=True, slots=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"


@dataclass(frozen=True, slots=True)
class Append(Command):
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime | None
    message: bytes
    name: ClassVar[str] = "APPEND"

    def __repr__(self) -> str:  # a message can be megabytes: show its size only
        return (
            f"Append(tag={self.tag!r}, mailbox={self.mailbox!r}, flags={self.flags!r}, "
            f"internal_date={self.internal_date!r}, message=<{len(self.message)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"


@dataclass(frozen=True, slots=True)
class Idle(Command):
    """The server answers ``+ idling`` and then waits for a ``DONE`` line."""

    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str
    name: ClassVar[str] = "GETQUOTA"


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: str
    name: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    """``limits``: (upper-cased resource name, limit) pairs, possibly none."""

    root: str
    limits: tuple[tuple[str, int], ...]
    name: ClassVar[str] = "SETQUOTA"


# --------------------------------------------------------------------- selected


@dataclass(frozen=True, slots=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE (RFC 4315) when ``uid_set`` is given."""

    uid_set: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"

    @property
    def uid(self) -> bool:
        return self.uid_set is not None


@dataclass(frozen=True, slots=True)
class Search(Command):
    """``charset`` upper-cased or ``None``; strings in ``key`` are already decoded with it."""

    key: SearchKey
    charset: str | None = None
    uid: bool = False
    name: ClassVar[str] = "SEARCH"


# FETCH attributes ---------------------------------------------------------

SectionText = Literal["", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]


@dataclass(frozen=True, slots=True)
class Section:
    """A body section: ``part`` numbers (``1.2`` → ``(1, 2)``), then an optional text part.

    ``fields`` are the header names of HEADER.FIELDS[.NOT], upper-cased.
    """

    part: tuple[int, ...] = ()
    text: SectionText = ""
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        pieces = [".".join(str(p) for p in self.part)] if self.part else []
        if self.text:
            pieces.append(self.text)
        spec = ".".join(pieces)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class Partial:
    """``<origin.length>`` of a BODY[] fetch."""

    origin: int
    length: int


#: Plain FETCH attribute names (macros ALL/FAST/FULL are expanded by the parser).
#: ``BODY`` alone is the non-extensible BODYSTRUCTURE; MODSEQ is CONDSTORE's.
FetchName = Literal[
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",
]


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    name: FetchName


@dataclass(frozen=True, slots=True)
class BodySection:
    """``BODY[section]<partial>`` or, with ``peek``, ``BODY.PEEK[...]`` (does not set \\Seen)."""

    section: Section = Section()
    peek: bool = False
    partial: Partial | None = None

    def response_name(self) -> str:
        """The item name the FETCH response uses: no ``.PEEK``, only the origin of a partial."""
        name = f"BODY[{self.section}]"
        if self.partial is not None:
            name += f"<{self.partial.origin}>"
        return name


FetchItem = FetchAttribute | BodySection


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    uid: bool = False
    changed_since: int | None = None  # CONDSTORE (CHANGEDSINCE n)
    vanished: bool = False  # QRESYNC (VANISHED), UID FETCH only
    name: ClassVar[str] = "FETCH"


StoreMode = Literal["replace", "add", "remove"]


@dataclass(frozen=True, slots=True)
class Store(Command):
    """``FLAGS`` (replace), ``+FLAGS`` (add) or ``-FLAGS`` (remove), ``.SILENT`` or not."""

    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False
    unchanged_since: int | None = None  # CONDSTORE (UNCHANGEDSINCE n)
    name: ClassVar[str] = "STORE"


@dataclass(frozen=True, slots=True)
class Copy(Command):
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "COPY"


@dataclass(frozen=True, slots=True)
class Move(Command):
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "MOVE"


AnyCommand = (
    Capability
    | Noop
    | Logout
    | Id
    | StartTLS
    | Authenticate
    | Login
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Status
    | Append
    | Enable
    | Idle
    | Namespace
    | GetQuota
    | GetQuotaRoot
    | SetQuota
    | Check
    | Close
    | Unselect
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
)
