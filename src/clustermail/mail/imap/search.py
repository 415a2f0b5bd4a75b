"""SEARCH keys (RFC 3501 §6.4.4) as a small AST, and a pure evaluator.

The parser lowers the RFC's many keys onto few nodes: ``UNSEEN`` is
``NotKey(FlagKey("\\Seen"))``, ``NEW`` is ``\\Recent`` and not ``\\Seen``,
``FROM x`` is ``HeaderKey("FROM", x)``; a list of keys is an :class:`AndKey`.
:func:`matches` evaluates a key against any object that has the
:class:`MessageView` attributes, so the server can back it with its store.

Semantics from the RFC: string keys match a case-insensitive substring of the
decoded value; date keys compare calendar dates only, "disregarding time and
timezone" (the date as written in the message's own zone); ``*`` is the last
message (or the largest UID), resolved through :class:`SearchContext`.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol

from clustermail.mail.imap.sequence import SequenceSet


class MessageView(Protocol):
    """What the evaluator needs to know about one message."""

    @property
    def seq(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> Set[str]: ...
    @property
    def internal_date(self) -> datetime: ...
    @property
    def size(self) -> int: ...
    @property
    def sent_date(self) -> date | None:
        """The Date: header (a ``datetime`` in its own zone is fine); ``None`` if absent."""
        ...

    def header(self, name: str) -> Sequence[str]:
        """Every value of header ``name`` (case-insensitive), encoded words decoded."""
        ...

    def body_text(self) -> str:
        """The decoded text of the body (what SEARCH BODY looks in)."""
        ...

    def full_text(self) -> str:
        """Decoded header and body text (what SEARCH TEXT looks in)."""
        ...


@dataclass(frozen=True, slots=True)
class SearchContext:
    """Mailbox facts that keys refer to: what ``*`` means."""

    max_seq: int
    max_uid: int


# ------------------------------------------------------------------- the AST


@dataclass(frozen=True, slots=True)
class AllKey:
    pass


@dataclass(frozen=True, slots=True)
class SequenceKey:
    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class UidKey:
    sequence_set: SequenceSet


@dataclass(frozen=True, slots=True)
class FlagKey:
    """The message has ``flag`` (a system flag or keyword, compared case-insensitively)."""

    flag: str


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """Header ``name`` (upper-cased) contains ``value``; an empty value only needs the header."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class BodyKey:
    text: str


@dataclass(frozen=True, slots=True)
class TextKey:
    text: str


DateField = Literal["internal", "sent"]
DateOp = Literal["before", "on", "since"]


@dataclass(frozen=True, slots=True)
class DateKey:
    """BEFORE/ON/SINCE (``field="internal"``) and SENTBEFORE/SENTON/SENTSINCE (``"sent"``)."""

    field: DateField
    op: DateOp
    date: date


@dataclass(frozen=True, slots=True)
class SizeKey:
    op: Literal["larger", "smaller"]
    size: int


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """CONDSTORE ``MODSEQ n``: the message's mod-sequence is at least ``modseq``."""

    modseq: int


@dataclass(frozen=True, slots=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey:
    keys: tuple[SearchKey, ...]


SearchKey = (
    AllKey
    | SequenceKey
    | UidKey
    | FlagKey
    | HeaderKey
    | BodyKey
    | TextKey
    | DateKey
    | SizeKey
    | ModSeqKey
    | NotKey
    | OrKey
    | AndKey
)


# -------------------------------------------------------------- the evaluator


def matches(key: SearchKey, msg: MessageView, context: SearchContext) -> bool:
    """Whether ``msg`` satisfies ``key``. Pure; never touches anything but ``msg``."""
    match key:
        case AllKey():
            return True
        case SequenceKey(sequence_set=s):
            return s.contains(msg.seq, context.max_seq)
        case UidKey(sequence_set=s):
            return s.contains(msg.uid, context.max_uid)
        case FlagKey(flag=flag):
            wanted = flag.casefold()
            return any(f.casefold() == wanted for f in msg.flags)
        case HeaderKey(name=name, value=value):
            values = msg.header(name)
            if not value:
                return len(values) > 0
            needle = value.casefold()
            return any(needle in v.casefold() for v in values)
        case BodyKey(text=text):
            return text.casefold() in msg.body_text().casefold()
        case TextKey(text=text):
            return text.casefold() in msg.full_text().casefold()
        case DateKey(field=field, op=op, date=day):
            when = msg.internal_date if field == "internal" else msg.sent_date
            if when is None:
                return False
            return _compare_day(_day_of(when), op, day)
        case SizeKey(op=op, size=size):
            return msg.size > size if op == "larger" else msg.size < size
        case ModSeqKey(modseq=modseq):
            # CONDSTORE is optional: a view without mod-sequences matches nothing.
            own = getattr(msg, "modseq", None)
            return isinstance(own, int) and own >= modseq
        case NotKey(key=inner):
            return not matches(inner, msg, context)
        case OrKey(left=left, right=right):
            return matches(left, msg, context) or matches(right, msg, context)
        case AndKey(keys=keys):
            return all(matches(k, msg, context) for k in keys)
    raise TypeError(f"not a search key: {key!r}")


def _day_of(when: date) -> date:
    # A datetime's own calendar date, in its own zone: the RFC disregards time
    # and timezone, so no conversion to UTC or to the server's zone.
    return when.date() if isinstance(when, datetime) else when


def _compare_day(day: date, op: DateOp, ref: date) -> bool:
    if op == "before":
        return day < ref
    if op == "on":
        return day == ref
    return day >= ref
