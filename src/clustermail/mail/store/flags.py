"""Message flags: the IMAP system flags as a bitmask, keywords as a sorted space-joined string
(NULL when none), so a folder listing is a handful of integers per message."""

from __future__ import annotations

from collections.abc import Iterable

from clustermail.mail.store.errors import StoreError

SEEN = 1
ANSWERED = 2
FLAGGED = 4
DELETED = 8
DRAFT = 16
RECENT = 32  # session-ish: set at delivery, cleared by the first session that claims it

SYSTEM_FLAGS: dict[str, int] = {
    "\\seen": SEEN,
    "\\answered": ANSWERED,
    "\\flagged": FLAGGED,
    "\\deleted": DELETED,
    "\\draft": DRAFT,
    "\\recent": RECENT,
}
_NAMES = {
    bit: name
    for name, bit in (
        ("\\Seen", SEEN),
        ("\\Answered", ANSWERED),
        ("\\Flagged", FLAGGED),
        ("\\Deleted", DELETED),
        ("\\Draft", DRAFT),
        ("\\Recent", RECENT),
    )
}
_KEYWORD_FORBIDDEN = frozenset(' (){%*"\\]') | frozenset(chr(c) for c in range(33)) | {"\x7f"}


class InvalidFlagError(StoreError):
    """A flag that is not a system flag and not a valid IMAP keyword atom."""


def parse_flags(names: Iterable[str], *, allow_recent: bool = False) -> tuple[int, frozenset[str]]:
    """(system flag mask, keywords) of IMAP flag names; \\Recent only where the caller allows."""
    mask = 0
    keywords: set[str] = set()
    for name in names:
        bit = SYSTEM_FLAGS.get(name.lower())
        if bit is not None:
            if bit == RECENT and not allow_recent:
                raise InvalidFlagError("\\Recent cannot be set by a client")
            mask |= bit
        elif name.startswith("\\") or not name or any(c in _KEYWORD_FORBIDDEN for c in name):
            raise InvalidFlagError(f"invalid flag {name!r}")
        else:
            keywords.add(name)
    return mask, frozenset(keywords)


def encode_keywords(keywords: Iterable[str]) -> str | None:
    text = " ".join(sorted(keywords))
    return text or None


def decode_keywords(text: str | None) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def flag_names(mask: int, keywords: str | None = None) -> list[str]:
    """IMAP flag names of a mask plus keywords, system flags first."""
    names = [name for bit, name in _NAMES.items() if mask & bit]
    if keywords:
        names += keywords.split()
    return names
