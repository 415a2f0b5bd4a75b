"""Mail addresses: parsing with clear errors, lookup keys, sub-addressing. Pure.

Syntax is RFC 5321's ``Mailbox`` (dot-atom or quoted-string local part, a
domain name) with RFC 6531's SMTPUTF8 extension (UTF-8 in both parts).
Address literals (``user@[192.0.2.1]``) are not directory addresses.

Case rules: the domain is case-insensitive and kept lowercased; the local part
is case-sensitive on the wire (RFC 5321 §2.4), but every real MTA and this
directory look it up case-insensitively, while keeping the spelling it was
created with for display. :attr:`Address.key` is the lookup form.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # 255 on the wire, minus the length bytes of the first/last label
MAX_LABEL_OCTETS = 63
MAX_ADDRESS_OCTETS = 254  # a path is at most 256 octets including the angle brackets
SUBADDRESS_SEPARATOR = "+"

_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")


class InvalidAddressError(ValueError):
    """An address or domain that is not syntactically valid; the text says why."""


def _is_atext(c: str) -> bool:
    return (c.isascii() and (c.isalnum() or c in _ATEXT_SPECIALS)) or (
        not c.isascii() and unicodedata.category(c)[0] not in "CZ"  # no controls, no spaces
    )


def _is_dot_atom(text: str) -> bool:
    return bool(text) and all(atom and all(map(_is_atext, atom)) for atom in text.split("."))


def _unquote(quoted: str, whole: str) -> str:
    """The content of a quoted-string local part (RFC 5321 qtextSMTP / quoted-pairSMTP)."""
    out: list[str] = []
    i = 1
    while i < len(quoted) - 1:
        c = quoted[i]
        if c == "\\":
            if i + 1 >= len(quoted) - 1 or not 32 <= ord(quoted[i + 1]) <= 126:
                raise InvalidAddressError(f"{whole!r}: a backslash in the quoted local part "
                                          "must escape a printable character")
            out.append(quoted[i + 1])
            i += 2
            continue
        if c == '"' or (c.isascii() and not 32 <= ord(c) <= 126):
            raise InvalidAddressError(f"{whole!r}: character {c!r} is not allowed unescaped "
                                      "in a quoted local part")
        out.append(c)
        i += 1
    return "".join(out)


def _quote(local: str) -> str:
    if _is_dot_atom(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def normalize_domain(text: str) -> str:
    """A domain name in its stored form (NFC, lowercased), or InvalidAddressError."""
    if not text:
        raise InvalidAddressError("the domain is empty")
    if text.startswith("["):
        raise InvalidAddressError(
            f"{text!r}: address literals are not accepted here; use a domain name"
        )
    domain = unicodedata.normalize("NFC", text).lower()
    if domain.endswith("."):
        raise InvalidAddressError(f"domain {text!r} ends with a dot")
    if len(domain.encode()) > MAX_DOMAIN_OCTETS:
        raise InvalidAddressError(f"domain {text!r} is longer than {MAX_DOMAIN_OCTETS} octets")
    for label in domain.split("."):
        if not label:
            raise InvalidAddressError(f"domain {text!r} has an empty label (two dots in a row?)")
        if len(label.encode()) > MAX_LABEL_OCTETS:
            raise InvalidAddressError(
                f"domain {text!r}: label {label!r} is longer than {MAX_LABEL_OCTETS} octets"
            )
        if label.startswith("-") or label.endswith("-"):
            raise InvalidAddressError(
                f"domain {text!r}: label {label!r} starts or ends with a hyphen"
            )
        bad = next((c for c in label if not (c.isalnum() or c == "-")), None)
        if bad is not None:
            raise InvalidAddressError(
                f"domain {text!r}: character {bad!r} is not allowed in a domain name "
                "(letters, digits and hyphens only)"
            )
    return domain


@dataclass(frozen=True, slots=True)
class Address:
    #: The local part's content (unquoted), spelled as given.
    local: str
    #: The domain, lowercased.
    domain: str

    def __str__(self) -> str:
        return f"{_quote(self.local)}@{self.domain}"

    @property
    def key(self) -> str:
        """The lookup form: local part lowercased (every MTA treats it so)."""
        return f"{_quote(self.local.lower())}@{self.domain}"

    def base(self) -> Address | None:
        """``user`` of ``user+tag@domain`` (sub-addressing), or None without a tag."""
        head, sep, _ = self.local.partition(SUBADDRESS_SEPARATOR)
        if not sep or not head:
            return None
        return Address(head, self.domain)


def parse_address(text: str) -> Address:
    """Parses ``local@domain``; raises InvalidAddressError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise InvalidAddressError("the address is empty")
    if text.startswith("<") and text.endswith(">"):
        raise InvalidAddressError(f"{text!r}: give the address without angle brackets")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidAddressError(f"{text!r} contains a control character")
    if len(text.encode()) > MAX_ADDRESS_OCTETS:
        raise InvalidAddressError(f"{text[:40]!r}… is longer than {MAX_ADDRESS_OCTETS} octets")
    local_text, at, domain_text = text.rpartition("@")
    if not at:
        raise InvalidAddressError(f"{text!r} is not an address: it has no '@'")
    if not local_text:
        raise InvalidAddressError(f"{text!r} has an empty local part")
    if local_text.startswith('"') and local_text.endswith('"') and len(local_text) >= 2:
        local = _unquote(local_text, text)
        if not local:
            raise InvalidAddressError(f"{text!r} has an empty local part")
    elif _is_dot_atom(local_text):
        local = local_text
    else:
        if "@" in local_text:
            why = "it has more than one '@' (quote the local part if it really contains one)"
        elif " " in local_text:
            why = "the local part contains a space (it must be quoted)"
        elif ".." in local_text or local_text.startswith(".") or local_text.endswith("."):
            why = "the local part has a leading, trailing or doubled dot"
        else:
            bad = next((c for c in local_text if c != "." and not _is_atext(c)), "?")
            why = f"character {bad!r} is not allowed in an unquoted local part"
        raise InvalidAddressError(f"{text!r} is not a valid address: {why}")
    local = unicodedata.normalize("NFC", local)  # one spelling of the same characters
    if len(_quote(local).encode()) > MAX_LOCAL_OCTETS:
        raise InvalidAddressError(f"{text!r}: the local part is longer than "
                                  f"{MAX_LOCAL_OCTETS} octets")
    try:
        domain = normalize_domain(domain_text)
    except InvalidAddressError as exc:
        raise InvalidAddressError(f"{text!r} is not a valid address: {exc}") from None
    return Address(local, domain)


def lookup_key(text: str) -> str:
    """The lookup key of an address (what the directory compares)."""
    return parse_address(text).key


def same_address(a: str, b: str) -> bool:
    """Whether two addresses name the same recipient under the directory's case rules."""
    return lookup_key(a) == lookup_key(b)
