"""The token level of the IMAP grammar (RFC 3501 §9): atoms, strings, literals, numbers.

:class:`Reader` walks one framed command (bytes, literals inline as
``{n}\\r\\n`` + data) with a cursor. Every method either consumes what it was
asked for or raises :class:`ParseError` carrying the command's tag, so the
grammar in :mod:`parser` reads like the ABNF and cannot crash.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

from clustermail.mail.imap import mutf7
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.sequence import SequenceSet, SequenceSetError


def _char_class(chars: bytes) -> bytes:
    return b"[" + b"".join(re.escape(bytes([c])) for c in sorted(set(chars))) + b"]"


# ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]".
ATOM_CHARS = bytes(c for c in range(0x21, 0x7F) if c not in b'(){%*"\\]')
ASTRING_CHARS = ATOM_CHARS + b"]"
# list-char adds the wildcards to ASTRING-CHAR (RFC 3501 list-mailbox).
LIST_CHARS = ASTRING_CHARS + b"%*"
# tag: 1*<any ASTRING-CHAR except "+">.
TAG_CHARS = bytes(c for c in ASTRING_CHARS if c != ord("+"))

_ATOM_RE = re.compile(_char_class(ATOM_CHARS) + b"+")
_ASTRING_RE = re.compile(_char_class(ASTRING_CHARS) + b"+")
_LIST_RE = re.compile(_char_class(LIST_CHARS) + b"+")
TAG_RE = re.compile(_char_class(TAG_CHARS) + b"+")
_QUOTED_RE = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE_RE = re.compile(rb"\\([\"\\])")
_LITERAL_RE = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\r?\n")
_NUMBER_RE = re.compile(rb"[0-9]+")
_SEQSET_RE = re.compile(rb"[0-9*:,]+")
_FLAG_RE = re.compile(rb"\\?" + _char_class(ATOM_CHARS) + b"+")
_SIMPLE_FLAG_LIST_RE = re.compile(
    rb"\((" + _FLAG_RE.pattern + rb"(?: " + _FLAG_RE.pattern + rb")*)?\)"
)

MAX_NUMBER = 0xFFFFFFFF  # RFC 3501 number: unsigned 32-bit
MAX_NUMBER64 = 0x7FFFFFFFFFFFFFFF  # RFC 9051 number64 / RFC 7162 mod-sequence

_SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


def flag_name(raw: bytes) -> str:
    """A flag as read: system flags in their usual case (``\\seen`` is ``\\Seen``)."""
    name = raw.decode("ascii")
    if name.startswith("\\"):
        return _SYSTEM_FLAGS.get(name.upper(), name)
    return name


_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        (
            b"JAN",
            b"FEB",
            b"MAR",
            b"APR",
            b"MAY",
            b"JUN",
            b"JUL",
            b"AUG",
            b"SEP",
            b"OCT",
            b"NOV",
            b"DEC",
        )
    )
}
_DATE_RE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME_RE = re.compile(
    rb'" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)


def show(raw: bytes, limit: int = 30) -> str:
    """A short printable rendering of client bytes for error messages."""
    text = raw[:limit].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text + ("..." if len(raw) > limit else "")


def decode_utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Reader:
    """A cursor over one framed command."""

    __slots__ = ("buf", "decode_text", "pos", "tag")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.tag: str | None = None
        # How SEARCH strings are turned into text; set by CHARSET.
        self.decode_text: Callable[[bytes], str | None] = decode_utf8

    # ---------------------------------------------------------------- basics

    def fail(self, message: str) -> ParseError:
        return ParseError(message, tag=self.tag)

    def eof(self) -> bool:
        return self.pos >= len(self.buf)

    def peek(self) -> int:
        return self.buf[self.pos] if self.pos < len(self.buf) else -1

    def at(self, char: bytes) -> bool:
        return self.buf.startswith(char, self.pos)

    def next_is_sp(self) -> bool:
        return self.peek() == 0x20

    def sp(self, what: str) -> None:
        """One space, then ``what``: a missing space means ``what`` is missing."""
        c = self.peek()
        if c != 0x20:
            if c == -1 or c == 0x29:  # end of line or of a list
                raise self.fail(f"missing {what}")
            if c >= 0x80:
                raise self.fail(
                    f"unexpected 8-bit character before {what}: non-ASCII text must be "
                    "quoted or sent as a literal"
                )
            raise self.fail(f"expected a space before {what}, found {self.here()!r}")
        self.pos += 1

    def expect(self, literal: bytes, what: str) -> None:
        if not self.buf.startswith(literal, self.pos):
            raise self.fail(f"expected {what}, found {self.here()!r}")
        self.pos += len(literal)

    def here(self) -> str:
        if self.eof():
            return "end of line"
        return show(self.buf[self.pos :])

    def end(self) -> None:
        if not self.eof():
            raise self.fail(f"unexpected characters at end of command: {self.here()!r}")

    def _match(self, pattern: re.Pattern[bytes]) -> bytes | None:
        m = pattern.match(self.buf, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group(0)

    # ------------------------------------------------------------ tokens

    def atom(self, what: str) -> bytes:
        raw = self._match(_ATOM_RE)
        if raw is None:
            raise self.fail(f"expected {what}, found {self.here()!r}")
        return raw

    def keyword(self, what: str) -> str:
        """An atom, upper-cased (command words, options, item names)."""
        return self.atom(what).decode("ascii").upper()

    def token(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        raw = self._match(pattern)
        if raw is None:
            raise self.fail(f"expected {what}, found {self.here()!r}")
        return raw

    def quoted(self, what: str) -> bytes:
        m = _QUOTED_RE.match(self.buf, self.pos)
        if m is None:
            raise self.fail(f"invalid quoted string for {what}")
        self.pos = m.end()
        return _UNESCAPE_RE.sub(rb"\1", m.group(1))

    def literal(self, what: str) -> bytes:
        m = _LITERAL_RE.match(self.buf, self.pos)
        if m is None:
            raise self.fail(f"invalid literal for {what}")
        if m.group(1):
            raise self.fail(f"binary literal (~{{n}}) not supported for {what}")
        digits = m.group(2)
        if len(digits) > 10 or int(digits) > MAX_NUMBER:
            raise self.fail(f"literal size {show(digits)} is too large")
        n = int(digits)
        start = m.end()
        if start + n > len(self.buf):
            raise self.fail(f"literal for {what} is shorter than its announced {n} bytes")
        self.pos = start + n
        return self.buf[start : start + n]

    def string(self, what: str) -> bytes:
        c = self.peek()
        if c == 0x22:  # "
            return self.quoted(what)
        if c == 0x7B or self.at(b"~{"):  # literal, or literal8 (rejected with a clear message)
            return self.literal(what)
        raise self.fail(f"expected a string for {what}, found {self.here()!r}")

    def astring(self, what: str) -> bytes:
        if self.at_string():
            return self.string(what)
        raw = self._match(_ASTRING_RE)
        if raw is None:
            raise self.fail(f"expected {what}, found {self.here()!r}")
        return raw

    def at_string(self) -> bool:
        """A quoted string or a literal starts here (``~`` alone is an atom character)."""
        c = self.peek()
        return c == 0x22 or c == 0x7B or self.at(b"~{")

    def is_nil(self) -> bool:
        """Consume ``NIL`` (any case) if it is the next whole atom."""
        m = _ATOM_RE.match(self.buf, self.pos)
        if m is not None and m.group(0).upper() == b"NIL":
            self.pos = m.end()
            return True
        return False

    def nstring(self, what: str) -> bytes | None:
        if self.is_nil():
            return None
        return self.string(what)

    def text(self, raw: bytes, what: str) -> str:
        """Client bytes as text: UTF-8 (a superset of the RFC's 7-bit strings)."""
        value = decode_utf8(raw)
        if value is None:
            raise self.fail(f"{what} is not valid UTF-8")
        return value

    def astring_text(self, what: str) -> str:
        return self.text(self.astring(what), what)

    def search_text(self, what: str) -> str:
        raw = self.astring(what)
        value = self.decode_text(raw)
        if value is None:
            raise self.fail(f"{what} cannot be decoded with the given charset")
        return value

    def mailbox(self, what: str = "mailbox name") -> str:
        """A mailbox name: astring, modified UTF-7 decoded, INBOX case-folded."""
        return self.mailbox_name(self.astring(what), what)

    def mailbox_name(self, raw: bytes, what: str) -> str:
        if raw.upper() == b"INBOX":
            return "INBOX"
        try:
            return mutf7.decode(raw.decode("latin-1"))
        except mutf7.MUTF7Error as exc:
            raise self.fail(f"{what} {show(raw)!r}: {exc}") from None

    def list_mailbox(self, what: str) -> str:
        """list-mailbox: like a mailbox name, but ``%`` and ``*`` may appear unquoted."""
        if self.at_string():
            return self.mailbox_name(self.string(what), what)
        return self.mailbox_name(self.token(_LIST_RE, what), what)

    def number(self, what: str, *, nonzero: bool = False, limit: int = MAX_NUMBER) -> int:
        raw = self.token(_NUMBER_RE, what)
        if len(raw) > 19 or int(raw) > limit:
            raise self.fail(f"{what} {show(raw)} is too large")
        n = int(raw)
        if nonzero and n == 0:
            raise self.fail(f"{what} must not be zero")
        return n

    def sequence_set(self, what: str = "sequence set") -> SequenceSet:
        raw = self.token(_SEQSET_RE, what)
        try:
            return SequenceSet.parse(raw)
        except SequenceSetError as exc:
            raise self.fail(str(exc)) from None

    def at_sequence_set(self) -> bool:
        c = self.peek()
        return 0x30 <= c <= 0x39 or c == 0x2A

    # ------------------------------------------------------------- lists

    def open_paren(self, what: str) -> None:
        if self.peek() != 0x28:
            raise self.fail(f"expected '(' to start {what}, found {self.here()!r}")
        self.pos += 1

    def close_or_sp(self, what: str) -> bool:
        """After a list item: True at ``)`` (consumed), False at a space (consumed)."""
        c = self.peek()
        if c == 0x29:
            self.pos += 1
            return True
        if c == 0x20:
            self.pos += 1
            return False
        raise self.fail(f"expected ' ' or ')' in {what}, found {self.here()!r}")

    def list_of(self, item: Callable[[], object], what: str, *, allow_empty: bool) -> None:
        """``(item SP item ...)``; ``item`` does the consuming and collecting."""
        self.open_paren(what)
        if self.peek() == 0x29:
            if not allow_empty:
                raise self.fail(f"{what} must not be empty")
            self.pos += 1
            return
        while True:
            item()
            if self.close_or_sp(what):
                return

    def flag(self, what: str = "flag") -> str:
        return flag_name(self.token(_FLAG_RE, what))

    def simple_flag_list_to_end(self) -> tuple[str, ...] | None:
        """``(flag *(SP flag))`` or ``()`` ending the command, in one match (STORE's usual
        form); None, having read nothing, for anything else (then the caller reads it
        token by token, with that path's errors)."""
        m = _SIMPLE_FLAG_LIST_RE.fullmatch(self.buf, self.pos)
        if m is None:
            return None
        self.pos = len(self.buf)
        inner = m.group(1)
        return tuple(map(flag_name, inner.split(b" "))) if inner else ()

    def flag_list(self, what: str = "flag list") -> tuple[str, ...]:
        flags: list[str] = []
        self.list_of(lambda: flags.append(self.flag()), what, allow_empty=True)
        return tuple(flags)

    # ------------------------------------------------------------- dates

    def date(self, what: str) -> date:
        """``date``: ``d-Mon-yyyy``, optionally quoted."""
        quoted = self.peek() == 0x22
        if quoted:
            self.pos += 1
        m = _DATE_RE.match(self.buf, self.pos)
        if m is None:
            raise self.fail(f"expected a date like 1-Feb-2024 for {what}, found {self.here()!r}")
        self.pos = m.end()
        if quoted:
            self.expect(b'"', "closing quote of date")
        month = _MONTHS.get(m.group(2).upper())
        if month is None:
            raise self.fail(f"unknown month {show(m.group(2))!r} in {what}")
        try:
            return date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise self.fail(f"invalid date in {what}") from None

    def date_time(self, what: str) -> datetime:
        """``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"``."""
        m = _DATE_TIME_RE.match(self.buf, self.pos)
        if m is None:
            raise self.fail(
                f'expected a date-time like "01-Feb-2024 10:00:00 +0000" for {what}, '
                f"found {self.here()!r}"
            )
        self.pos = m.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _MONTHS.get(mon.upper())
        if month is None:
            raise self.fail(f"unknown month {show(mon)!r} in {what}")
        offset = timedelta(hours=int(zh), minutes=int(zm))
        if offset >= timedelta(hours=24) or int(zm) >= 60:
            raise self.fail(f"invalid time zone in {what}")
        try:
            tz = timezone(-offset if sign == b"-" else offset)
            return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz)
        except ValueError:
            raise self.fail(f"invalid date-time in {what}") from None
