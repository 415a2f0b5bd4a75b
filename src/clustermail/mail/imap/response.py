"""Rendering server responses into IMAP wire bytes (RFC 3501 §7, §9).

Values map onto the grammar like this (:func:`render`):

* ``None`` → ``NIL``; ``int`` → number; ``str`` / ``bytes`` → string, quoted
  when short 7-bit text, else a literal (CR, LF, NUL, 8-bit or long);
* :class:`Atom` → verbatim atom (flags, keywords, names);
  :class:`Literal` → always a literal; :class:`Raw` → pre-rendered bytes;
* a list or tuple → a parenthesised list, items separated by one space.

ENVELOPE and BODYSTRUCTURE come from nested Python data in RFC 3501 §7.4.2
order — the shape ``mime.analyze`` produces:

ENVELOPE: ``[date, subject, from, sender, reply_to, to, cc, bcc, in_reply_to,
message_id]``; the strings are ``str | bytes | None``; each address list is
``None`` (or empty) or a list of ``[name, adl, mailbox, host]`` (RFC 2822
groups as the RFC's ``[None, None, "group", None]`` … ``[None, None, None,
None]`` markers).

BODYSTRUCTURE of a single part (its first element is a string)::

    [type, subtype, params, id, description, encoding, size,
     *type_fields, md5, disposition, language, location, *more]

``params`` is ``None`` or a flat list ``[name1, value1, name2, value2, ...]``;
``type_fields`` is ``[lines]`` for ``text/*``, ``[envelope, body, lines]``
for ``message/rfc822`` (``body`` a BODYSTRUCTURE again), nothing otherwise.
The extension fields are optional, each only if the previous one is there:
``disposition`` is ``None`` or ``[type, params]``, ``language`` is ``None``,
a string or a list of strings, ``location`` ``None`` or a string.

BODYSTRUCTURE of a multipart (its first element is a list)::

    [part1, part2, ..., subtype, params, disposition, language, location, *more]

with the same optional extension fields. ``render_bodystructure(...,
extensible=False)`` drops every extension field: that is FETCH ``BODY``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal as TypingLiteral

from clustermail.mail.imap import mutf7
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.lexer import ASTRING_CHARS
from clustermail.mail.imap.sequence import SequenceSet

#: Longest string we send quoted; longer ones go as literals, which clients
#: read without scanning for escapes.
MAX_QUOTED = 1024
CRLF = b"\r\n"


class RenderError(ValueError):
    """Data that cannot be rendered as asked: a server bug, never client input."""


@dataclass(frozen=True, slots=True)
class Atom:
    """Rendered verbatim: flags (``\\Seen``), keywords, item names."""

    text: str

    def __post_init__(self) -> None:
        if not self.text or any(c in self.text for c in ' ()"{\r\n\x00'):
            raise RenderError(f"not an atom: {self.text!r}")


@dataclass(frozen=True, slots=True)
class Literal:
    """Rendered as ``{n}\\r\\n`` + data, whatever the data is."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes already in wire form (e.g. a rendered ENVELOPE), embedded as they are."""

    data: bytes


Value = None | int | str | bytes | Atom | Literal | Raw | Sequence["Value"]
#: Nested data of an ENVELOPE or BODYSTRUCTURE.
Nested = None | int | str | bytes | Sequence["Nested"]

_QUOTABLE = frozenset([0x09, *range(0x20, 0x7F)])
_QUOTABLE_BYTES = bytes(sorted(_QUOTABLE))  # for bytes.translate: deletes what may be quoted
_ASTRING_SET = frozenset(ASTRING_CHARS)


# ------------------------------------------------------------------ strings


def _as_bytes(value: str | bytes) -> bytes:
    # surrogateescape: the store keeps raw 8-bit header bytes in str form that way
    # (see fetch.py), so they go out exactly as they came in.
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def quoted(value: str | bytes) -> bytes:
    data = _as_bytes(value)
    if data.translate(None, _QUOTABLE_BYTES):
        raise RenderError("cannot quote a string with CR, LF, NUL or 8-bit characters")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: str | bytes) -> bytes:
    data = _as_bytes(value)
    return b"{%d}\r\n" % len(data) + data


def string(value: str | bytes) -> bytes:
    """A string, quoted when that is safe and short, else a literal."""
    data = _as_bytes(value)
    if len(data) <= MAX_QUOTED and not data.translate(None, _QUOTABLE_BYTES):
        if b"\\" in data or b'"' in data:
            data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        return b'"' + data + b'"'
    return literal(data)


def nstring(value: str | bytes | None) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: str | bytes) -> bytes:
    """An atom when the value is one (and not ``NIL``), else a string."""
    data = _as_bytes(value)
    if data and data.upper() != b"NIL" and all(b in _ASTRING_SET for b in data):
        return data
    return string(data)


def mailbox(name: str) -> bytes:
    """A mailbox name as clients expect it: modified UTF-7, then astring."""
    return astring(mutf7.encode(name))


# ---------------------------------------------------------------- generic


def render(value: Value) -> bytes:
    """Any :data:`Value` in wire form (see the module docstring)."""
    out: list[bytes] = []
    _render_into(value, out)
    return b"".join(out)


def _render_into(value: Value, out: list[bytes]) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, bool):
        raise RenderError("booleans have no IMAP form")
    elif isinstance(value, int):
        if value < 0:
            raise RenderError(f"IMAP numbers are unsigned, got {value}")
        out.append(b"%d" % value)
    elif isinstance(value, str | bytes):
        out.append(string(value))
    elif isinstance(value, Atom):
        out.append(value.text.encode("ascii", "strict"))
    elif isinstance(value, Literal):
        out.append(literal(value.data))
    elif isinstance(value, Raw):
        out.append(value.data)
    else:
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            _render_into(item, out)
        out.append(b")")


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(Atom(f).text.encode("ascii") for f in flags) + b")"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_date_time(when: datetime) -> str:
    """``dd-Mon-yyyy hh:mm:ss +zzzz``; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return (
        f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hh:02d}{mm:02d}"
    )


def date_time(when: datetime) -> bytes:
    """A quoted ``date-time``, as INTERNALDATE is sent."""
    return b'"' + format_date_time(when).encode("ascii") + b'"'


# --------------------------------------------------- ENVELOPE, BODYSTRUCTURE


#: Which of the ten ENVELOPE fields are address lists (from, sender ... bcc).
_ADDRESS_FIELDS = (False, False, True, True, True, True, True, True, False, False)


def render_envelope(envelope: Sequence[Nested]) -> bytes:
    if isinstance(envelope, str | bytes) or len(envelope) != 10:
        raise RenderError("an ENVELOPE has exactly 10 fields")
    out = [
        _address_list(item) if addresses else _nstring_field(item, "ENVELOPE field")
        for item, addresses in zip(envelope, _ADDRESS_FIELDS, strict=True)
    ]
    return b"(" + b" ".join(out) + b")"


def _nstring_field(value: Nested, what: str) -> bytes:
    """:func:`nstring` of an ENVELOPE or address field (RenderError unless a string or
    None). Most are short printable ASCII: quoted here without the general checks (a
    client's first FETCH 1:* ENVELOPE renders tens of thousands)."""
    if value is None:
        return b"NIL"
    if type(value) is str and len(value) <= MAX_QUOTED and value.isascii() and value.isprintable():
        if '"' in value or "\\" in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return b'"' + value.encode("ascii") + b'"'
    return nstring(_text_or_none(value, what))


def _text_or_none(value: Nested, what: str) -> str | bytes | None:
    if value is None or isinstance(value, str | bytes):
        return value
    raise RenderError(f"{what} must be a string or None, got {type(value).__name__}")


def _address_list(value: Nested) -> bytes:
    if value is None or (isinstance(value, Sequence) and len(value) == 0):
        return b"NIL"
    if isinstance(value, str | bytes | int):
        raise RenderError("an address list must be None or a list of addresses")
    parts: list[bytes] = []
    for address in value:
        if isinstance(address, str | bytes | int) or address is None or len(address) != 4:
            raise RenderError("an address is [name, adl, mailbox, host]")
        name, adl, mailbox_, host = address
        parts.append(
            b"(%b %b %b %b)"
            % (
                _nstring_field(name, "address field"),
                _nstring_field(adl, "address field"),
                _nstring_field(mailbox_, "address field"),
                _nstring_field(host, "address field"),
            )
        )
    return b"(" + b"".join(parts) + b")"


def render_bodystructure(body: Sequence[Nested], *, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (``extensible=True``) or BODY (``False``) from nested data."""
    return _body(body, extensible, depth=0)


_MAX_BODY_DEPTH = 100


def _body(body: Nested, extensible: bool, depth: int) -> bytes:
    if depth > _MAX_BODY_DEPTH:
        raise RenderError("BODYSTRUCTURE nested too deeply")
    if body is None or isinstance(body, str | bytes | int) or not body:
        raise RenderError("a BODYSTRUCTURE is a non-empty list")
    first = body[0]
    if isinstance(first, Sequence) and not isinstance(first, str | bytes):
        return _multipart(body, extensible, depth)
    return _single_part(body, extensible, depth)


def _multipart(body: Sequence[Nested], extensible: bool, depth: int) -> bytes:
    n = 0
    while n < len(body) and isinstance(body[n], Sequence) and not isinstance(body[n], str | bytes):
        n += 1
    if n == len(body) or not isinstance(body[n], str | bytes):
        raise RenderError("a multipart BODYSTRUCTURE needs its subtype after the parts")
    # body-type-mpart = 1*body SP media-subtype: no space between the parts.
    out = [b"(", *(_body(part, extensible, depth + 1) for part in body[:n])]
    out += [b" ", string(_required_text(body[n], "multipart subtype"))]
    if extensible:
        for field in body[n + 1 :]:
            out += [b" ", render(field)]
    out.append(b")")
    return b"".join(out)


def _required_text(value: Nested, what: str) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    raise RenderError(f"{what} must be a string, got {type(value).__name__}")


def _text(value: Nested) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else ""


def _single_part(body: Sequence[Nested], extensible: bool, depth: int) -> bytes:
    if len(body) < 7:
        raise RenderError(
            "a single-part BODYSTRUCTURE starts with type, subtype, params, id, "
            "description, encoding, size"
        )
    kind, subtype = _text(body[0]).lower(), _text(body[1]).lower()
    fields: list[bytes] = [
        string(_required_text(body[0], "media type")),
        string(_required_text(body[1], "media subtype")),
        _params(body[2]),
        nstring(_text_or_none(body[3], "body id")),
        nstring(_text_or_none(body[4], "body description")),
        string(_required_text(body[5], "body encoding")),
        _number(body[6], "body size"),
    ]
    rest = 7
    if kind == "message" and subtype == "rfc822":
        if len(body) < 10:
            raise RenderError("a message/rfc822 part needs envelope, body and lines")
        envelope = body[7]
        if envelope is None or isinstance(envelope, str | bytes | int):
            raise RenderError("the envelope of a message/rfc822 part must be a list")
        fields += [
            render_envelope(envelope),
            _body(body[8], extensible, depth + 1),
            _number(body[9], "body lines"),
        ]
        rest = 10
    elif kind == "text":
        if len(body) < 8:
            raise RenderError("a text part needs its line count after the size")
        fields.append(_number(body[7], "body lines"))
        rest = 8
    if extensible:
        fields += [render(field) for field in body[rest:]]
    return b"(" + b" ".join(fields) + b")"


def _params(value: Nested) -> bytes:
    if value is None or (isinstance(value, Sequence) and len(value) == 0):
        return b"NIL"
    if isinstance(value, str | bytes | int) or len(value) % 2:
        raise RenderError("body parameters are None or a flat [name, value, ...] list")
    return b"(" + b" ".join(string(_required_text(v, "body parameter")) for v in value) + b")"


def _number(value: Nested, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RenderError(f"{what} must be a non-negative integer")
    return b"%d" % value


# ------------------------------------------------------------------- FETCH


def render_fetch(seq: int, items: Sequence[tuple[str, Value]]) -> bytes:
    """``* seq FETCH (name value ...)``; names verbatim (``BODY[1.TEXT]<0>``)."""
    out = [b"* %d FETCH (" % seq]
    for i, (name, value) in enumerate(items):
        if "\r" in name or "\n" in name:
            raise RenderError(f"bad FETCH item name {name!r}")
        if i:
            out.append(b" ")
        out.append(name.encode("ascii") + b" ")
        _render_into(value, out)
    out.append(b")\r\n")
    return b"".join(out)


def fetch_line(seq: int, parts: Sequence[bytes]) -> bytes:
    """``* seq FETCH (part part ...)`` from parts already rendered as ``NAME value``."""
    return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts))  # one copy of a message part


# ----------------------------------------------------------- status responses

Status = TypingLiteral["OK", "NO", "BAD", "PREAUTH", "BYE"]


def _clean_text(text: str) -> bytes:
    # Response text is one line: a CR or LF from anywhere (an exception message,
    # a mailbox name) must never end the line early and forge a response.
    data = text.encode("utf-8", "replace")
    return data.replace(b"\r", b" ").replace(b"\n", b" ").replace(b"\x00", b" ")


@functools.lru_cache(maxsize=256)  # pure; most answers are a few fixed texts
def _resp_text(text: str, code: str | None) -> bytes:
    body = _clean_text(text) or b"done"
    if code is not None:
        return b"[" + _clean_text(code) + b"] " + body
    if body.startswith(b"["):  # would read as a response code
        return b" " + body
    return body


def tagged(
    tag: str, status: TypingLiteral["OK", "NO", "BAD"], text: str, code: str | None = None
) -> bytes:
    """``tag OK [code] text``."""
    return _clean_text(tag) + b" " + status.encode() + b" " + _resp_text(text, code) + CRLF


def untagged_status(status: Status, text: str, code: str | None = None) -> bytes:
    """``* OK [code] text`` (also NO, BAD, PREAUTH, BYE)."""
    return b"* " + status.encode() + b" " + _resp_text(text, code) + CRLF


def untagged(*parts: Value) -> bytes:
    """``* part part ...``: atoms as given, other values rendered (``* 3 EXISTS``)."""
    out = [b"*"]
    for part in parts:
        out.append(b" ")
        _render_into(part, out)
    out.append(CRLF)
    return b"".join(out)


def continuation(text: str = "") -> bytes:
    return b"+ " + _clean_text(text) + CRLF


def render_parse_error(error: ParseError) -> bytes:
    """The one line that answers a :class:`ParseError`."""
    if error.tag is None:
        return untagged_status("BAD", error.message, error.code)
    return tagged(error.tag, error.status, error.message, error.code)


# ---------------------------------------------------------- response codes

ALERT = "ALERT"
ALREADYEXISTS = "ALREADYEXISTS"
AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"
CANNOT = "CANNOT"
CLIENTBUG = "CLIENTBUG"
CLOSED = "CLOSED"
CONTACTADMIN = "CONTACTADMIN"
EXPUNGEISSUED = "EXPUNGEISSUED"
INUSE = "INUSE"
LIMIT = "LIMIT"
NONEXISTENT = "NONEXISTENT"
NOPERM = "NOPERM"
OVERQUOTA = "OVERQUOTA"
PARSE = "PARSE"
PRIVACYREQUIRED = "PRIVACYREQUIRED"
READ_ONLY = "READ-ONLY"
READ_WRITE = "READ-WRITE"
SERVERBUG = "SERVERBUG"
TOOBIG = "TOOBIG"
TRYCREATE = "TRYCREATE"
UIDNOTSTICKY = "UIDNOTSTICKY"
UNAVAILABLE = "UNAVAILABLE"


def code_uidvalidity(value: int) -> str:
    return f"UIDVALIDITY {value}"


def code_uidnext(value: int) -> str:
    return f"UIDNEXT {value}"


def code_unseen(seq: int) -> str:
    return f"UNSEEN {seq}"


def code_highestmodseq(value: int) -> str:
    return f"HIGHESTMODSEQ {value}"


def code_permanentflags(flags: Iterable[str], *, new_keywords: bool = True) -> str:
    """``PERMANENTFLAGS (...)``, with ``\\*`` when clients may create keywords."""
    items = [*flags, "\\*"] if new_keywords else list(flags)
    return "PERMANENTFLAGS " + flag_list(items).decode("ascii")


def code_capability(capabilities: Iterable[str]) -> str:
    return "CAPABILITY " + " ".join(capabilities)


def code_badcharset(charsets: Iterable[str]) -> str:
    return "BADCHARSET (" + " ".join(astring(c).decode("ascii") for c in charsets) + ")"


def code_appenduid(uidvalidity: int, uid: int) -> str:
    return f"APPENDUID {uidvalidity} {uid}"


def code_copyuid(
    uidvalidity: int,
    source: SequenceSet | Iterable[int],
    destination: SequenceSet | Iterable[int],
) -> str:
    """``COPYUID v src dst``; number lists are compressed in order (RFC 4315 §3)."""
    src = source if isinstance(source, SequenceSet) else SequenceSet.compress(source)
    dst = destination if isinstance(destination, SequenceSet) else SequenceSet.compress(destination)
    return f"COPYUID {uidvalidity} {src} {dst}"


# ------------------------------------------------------------ untagged data


def capability_data(capabilities: Iterable[str]) -> bytes:
    return b"* CAPABILITY " + " ".join(capabilities).encode("ascii") + CRLF


def exists(count: int) -> bytes:
    return b"* %d EXISTS\r\n" % count


def recent(count: int) -> bytes:
    return b"* %d RECENT\r\n" % count


def expunge(seq: int) -> bytes:
    return b"* %d EXPUNGE\r\n" % seq


def flags_data(flags: Iterable[str]) -> bytes:
    return b"* FLAGS " + flag_list(flags) + CRLF


#: " n" for small numbers n, shared by all sessions: a 10 000-hit SEARCH reply (UNSEEN in
#: a big mailbox) is then one C-level join, several times faster than formatting.
_SPACED: list[bytes] = []
_MAX_CACHED_DECIMAL = 1 << 17  # ~6 MB at most


def search_data(numbers: Iterable[int], *, highest_modseq: int | None = None) -> bytes:
    """``* SEARCH 2 3 5``; with CONDSTORE, ``(MODSEQ n)`` at the end."""
    found = list(numbers)
    # Results come in ascending order: the last is the largest (any other order still
    # answers right, by the IndexError below). Numbers are never negative.
    top = found[-1] if found else 0
    if len(_SPACED) <= top < _MAX_CACHED_DECIMAL:
        end = min(_MAX_CACHED_DECIMAL, max(top + 1, 2 * len(_SPACED), 1024))
        _SPACED.extend(b" %d" % n for n in range(len(_SPACED), end))
    try:
        line = b"* SEARCH" + b"".join(map(_SPACED.__getitem__, found))
    except IndexError:  # a number past the table
        line = b" ".join([b"* SEARCH", *(b"%d" % n for n in found)])
    if highest_modseq is not None:
        line += b" (MODSEQ %d)" % highest_modseq
    return line + CRLF


def list_data(
    attributes: Iterable[str],
    delimiter: str | None,
    name: str,
    *,
    command: TypingLiteral["LIST", "LSUB"] = "LIST",
) -> bytes:
    """``* LIST (\\HasNoChildren) "/" INBOX``; ``name`` is Unicode, sent as modified UTF-7."""
    delim = b"NIL" if delimiter is None else quoted(delimiter)
    return (
        b"* "
        + command.encode()
        + b" "
        + flag_list(attributes)
        + b" "
        + delim
        + b" "
        + mailbox(name)
        + CRLF
    )


def status_data(name: str, items: Sequence[tuple[str, int]]) -> bytes:
    """``* STATUS box (MESSAGES 3 UIDNEXT 9)``."""
    body = b" ".join(b"%s %d" % (item.encode("ascii"), value) for item, value in items)
    return b"* STATUS " + mailbox(name) + b" (" + body + b")" + CRLF


def enabled_data(capabilities: Iterable[str]) -> bytes:
    return b"* ENABLED" + b"".join(b" " + c.encode("ascii") for c in capabilities) + CRLF


def id_data(params: Sequence[tuple[str, str | None]] | None) -> bytes:
    if not params:
        return b"* ID NIL\r\n"
    flat: list[Value] = []
    for key, value in params:
        flat += [key, value]
    return b"* ID " + render(flat) + CRLF


Namespace = Sequence[tuple[str, str | None]] | None


def namespace_data(personal: Namespace, other: Namespace, shared: Namespace) -> bytes:
    """``* NAMESPACE (("" "/")) NIL NIL``: each a list of (prefix, delimiter) or None."""

    def one(spaces: Namespace) -> bytes:
        if not spaces:
            return b"NIL"
        return (
            b"("
            + b"".join(
                b"("
                + string(mutf7.encode(prefix))
                + b" "
                + (b"NIL" if delim is None else quoted(delim))
                + b")"
                for prefix, delim in spaces
            )
            + b")"
        )

    return b"* NAMESPACE " + one(personal) + b" " + one(other) + b" " + one(shared) + CRLF


def quota_data(root: str, resources: Sequence[tuple[str, int, int]]) -> bytes:
    """``* QUOTA root (STORAGE used limit ...)``; usage and limits as the RFC counts them."""
    body = b" ".join(
        b"%s %d %d" % (name.encode("ascii"), used, limit) for name, used, limit in resources
    )
    return b"* QUOTA " + astring(root) + b" (" + body + b")" + CRLF


def quotaroot_data(name: str, roots: Iterable[str]) -> bytes:
    return b"* QUOTAROOT " + mailbox(name) + b"".join(b" " + astring(r) for r in roots) + CRLF
