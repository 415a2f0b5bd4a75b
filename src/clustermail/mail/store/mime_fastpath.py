"""The common, simple forms of a header block, an address list and a Content-* field,
each recognised by one regular expression, for :mod:`.mime`'s analysis at delivery.

Every function here gives exactly what the general path in :mod:`.mime` gives for the
same input, or ``None`` when the input is not in the simple form it knows (then the
caller takes the general path). The simple forms are what nearly all mail is made of:

* a header block of CRLF lines, fields and folded continuations only, ending in an
  empty line, within the line limit;
* addresses ``local@domain``, ``<local@domain>``, ``Display Name <local@domain>`` or
  ``"Display Name" <local@domain>``, separated by commas: no comments, groups, routes,
  escapes or empty list elements;
* ``type/subtype`` or a disposition type followed by ``; name=token`` or
  ``; name="text"`` parameters in printable ASCII: no RFC 2231 (``name*``), no
  escapes, no ``;`` inside quotes, no bare attributes.

``tests/mail/store/test_mime_differential.py`` holds them to that against a frozen copy
of the general implementation.
"""

from __future__ import annotations

import email.utils
import re
from typing import TypeAlias

IMAPValue: TypeAlias = "str | int | list[IMAPValue] | None"

# --------------------------------------------------------------------------- header blocks

#: One whole field: its first line (an RFC 5322 ftext name, its colon on that line) and
#: its continuation lines. ``^`` keeps a match from starting inside a line, so one match
#: per line that is not a continuation means every field is well formed.
_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n", re.M)


def header_fields(
    raw: bytes, start: int, end: int, max_lines: int
) -> tuple[list[tuple[str, str]], int] | None:
    """:func:`.mime.parse_header` for a block of CRLF-terminated field lines ending in an
    empty line; None for anything else (bare CR or LF, a line that is not a field, a
    first line that is a continuation, no empty line, too many lines)."""
    stop = raw.find(b"\r\n\r\n", start, end)
    if stop <= start:
        return None
    block = raw[start : stop + 2]
    lines = block.count(b"\n")
    if (
        lines >= max_lines  # the general path also reads the empty line as one
        or block.count(b"\r") != lines
        or block.count(b"\r\n") != lines
        or block[0] in (0x20, 0x09)
    ):
        return None
    # Decoding the block at once gives what decoding each field does: a field ends at a
    # CRLF, and ASCII bytes never belong to a multibyte sequence.
    pairs = _FIELD.findall(block.decode("utf-8", "surrogateescape"))
    folds = block.count(b"\r\n ") + block.count(b"\r\n\t")
    if len(pairs) != lines - folds:
        return None
    return [
        (name, (value.replace("\r\n", "") if folds else value).strip(" \t"))
        for name, value in pairs
    ], stop + 4


# --------------------------------------------------------------------------- addresses

_ATOM = r'[^ \t\r\n"(<>:;,@]+'  # what mime's address tokenizer reads as one atom
_WS = r"[ \t\r\n]*"
#: One address and what ends it (a comma, or the end of the field). The phrase is at
#: most 31 words, so an address stays far below the tokenizer's per-address budget.
_ADDRESS = re.compile(
    rf"{_WS}(?:"
    rf'(?:({_ATOM}(?:[ \t\r\n]+{_ATOM}){{0,30}})|"([^"\\]*)")?{_WS}<({_ATOM})@({_ATOM})>'
    rf"|({_ATOM})@({_ATOM})"
    rf"){_WS}(,|$)"
)
_SPACES = re.compile(r"[ \t\r\n]+")


def addresses(value: str, limit: int) -> list[IMAPValue] | None:
    """:func:`.mime.addresses` of a simple address list (module docstring), or None.
    More than ``limit`` addresses is left to the general path."""
    out: list[IMAPValue] = []
    pos, n = 0, len(value)
    while True:
        m = _ADDRESS.match(value, pos)
        if m is None:
            return None
        words, quoted, local, domain, bare_local, bare_domain, comma = m.groups()
        if bare_local is not None:
            out.append([None, None, bare_local, bare_domain])
        else:
            name = " ".join(_SPACES.split(words)) if words is not None else quoted or None
            out.append([name, None, local, domain])
        pos = m.end()
        if not comma:
            # "$" also matches before a final newline: the field must really end here.
            return out if pos == n and len(out) <= limit else None
        if pos >= n or len(out) >= limit:
            return None  # a trailing comma, or more than the limit


# --------------------------------------------------------------------------- Content-* fields

_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"  # RFC 2045 token
_PARAM = (
    r"[ \t]*;[ \t]*([!#$%&'+\-.0-9A-Z^_`a-z{|}~]+)[ \t]*=[ \t]*"  # a name without "*"
    rf'(?:({_TOKEN})|"([ !#-:<-\[\]-~]*)")[ \t]*'  # a token, or quoted: no " ; \
)
_PARAMS = rf"((?:{_PARAM})*)(?:;[ \t]*)?"
_CONTENT_TYPE = re.compile(rf"({_TOKEN}/{_TOKEN}){_PARAMS}")
_DISPOSITION = re.compile(rf"({_TOKEN}){_PARAMS}")
_ONE_PARAM = re.compile(_PARAM)

#: What a part's Content-Type and Content-Disposition say: the content type (lower
#: case), its parameters as IMAP lists them, the boundary, the disposition type (lower
#: case, "" when absent or empty) and the disposition's parameters.
Content: TypeAlias = tuple[
    str, "list[IMAPValue] | None", "str | None", str, "list[IMAPValue] | None"
]


def _params(text: str) -> tuple[list[IMAPValue] | None, str | None]:
    """IMAP parameter list and the first boundary parameter of matched ``_PARAMS`` text."""
    out: list[IMAPValue] = []
    boundary: str | None = None
    for m in _ONE_PARAM.finditer(text):
        name, token, quoted = m.groups()
        value = token if token is not None else quoted
        if boundary is None and name.lower() == "boundary":
            # email's get_boundary unquotes once more, and strips trailing white space.
            boundary = email.utils.unquote(value).rstrip()
        out += [name.upper(), value]
    return out or None, boundary


def content(ctype: str | None, disposition: str | None, default_type: str) -> Content | None:
    """What :mod:`.mime`'s general path makes of these Content-Type and
    Content-Disposition values (None: absent) with the email package, or None when
    either is not in the simple form."""
    if ctype is None:
        kind, params, boundary = default_type, None, None
    else:
        m = _CONTENT_TYPE.fullmatch(ctype)
        if m is None:
            return None
        kind = m[1].lower()
        params, boundary = _params(m[2])
    if disposition is None:
        return kind, params, boundary, "", None
    d = _DISPOSITION.fullmatch(disposition)
    if d is None:
        return None
    return kind, params, boundary, d[1].lower(), _params(d[2])[0]
