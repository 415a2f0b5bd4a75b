"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3).

Printable ASCII except ``&`` stands for itself; ``&`` is written ``&-``; any
other run of characters is UTF-16BE, base64-encoded with ``,`` instead of
``/`` and no padding, between ``&`` and ``-``. Decoding is strict (the RFC
says such names are invalid): a server must not accept two spellings of one
name, or ``INBOX`` could be reached as ``&AEk-NBOX``.
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode

from clustermail.mail.imap.errors import ImapProtocolError


class MUTF7Error(ImapProtocolError, ValueError):
    """A mailbox name that is not valid modified UTF-7."""


def _is_direct(ch: str) -> bool:
    return "\x20" <= ch <= "\x7e" and ch != "&"


def _encode_run(run: str) -> str:
    data = b64encode(run.encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
    return "&" + data.decode("ascii") + "-"


def encode(name: str) -> str:
    """Encode a Unicode mailbox name into modified UTF-7 (pure ASCII)."""
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if _is_direct(ch):
            if run:
                out.append(_encode_run("".join(run)))
                run = []
            out.append(ch)
        elif ch == "&":
            if run:
                out.append(_encode_run("".join(run)))
                run = []
            out.append("&-")
        else:
            run.append(ch)
    if run:
        out.append(_encode_run("".join(run)))
    return "".join(out)


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _decode_run(b64: str) -> str:
    if not b64:
        raise MUTF7Error("empty modified base64 run")
    if any(c not in _B64_CHARS for c in b64):
        raise MUTF7Error(f"invalid character in modified base64 run {b64!r}")
    if len(b64) % 4 == 1:
        raise MUTF7Error(f"truncated modified base64 run {b64!r}")
    padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
    try:
        raw = b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise MUTF7Error(f"invalid modified base64 run {b64!r}") from exc
    if len(raw) % 2:
        raise MUTF7Error(f"modified base64 run {b64!r} is not whole UTF-16 units")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise MUTF7Error(f"modified base64 run {b64!r} is not valid UTF-16") from exc
    # Canonical form only: no directly-encodable characters inside a run, no
    # leftover bits, so each name has exactly one spelling.
    if any(_is_direct(c) or c == "&" for c in text):
        raise MUTF7Error(f"modified base64 run {b64!r} encodes printable ASCII")
    if _encode_run(text) != "&" + b64 + "-":
        raise MUTF7Error(f"modified base64 run {b64!r} is not in canonical form")
    return text


def decode(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; :class:`MUTF7Error` if invalid."""
    if "&" not in name:
        for ch in name:
            if not _is_direct(ch):
                raise MUTF7Error(
                    f"mailbox name contains {ch!r}, which must be modified-UTF-7 encoded"
                )
        return name
    out: list[str] = []
    i = 0
    n = len(name)
    prev_was_run = False
    while i < n:
        ch = name[i]
        if ch == "&":
            end = name.find("-", i + 1)
            if end < 0:
                raise MUTF7Error("unterminated '&' in mailbox name")
            if end == i + 1:
                out.append("&")
                prev_was_run = False
            else:
                if prev_was_run:
                    # Two adjacent runs must have been one run.
                    raise MUTF7Error("adjacent modified base64 runs in mailbox name")
                out.append(_decode_run(name[i + 1 : end]))
                prev_was_run = True
            i = end + 1
            continue
        if not _is_direct(ch):
            raise MUTF7Error(f"mailbox name contains {ch!r}, which must be modified-UTF-7 encoded")
        out.append(ch)
        prev_was_run = False
        i += 1
    return "".join(out)
