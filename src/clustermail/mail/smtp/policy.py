"""SMTP policy as pure functions: limits, relay rules, message checks, Received header."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formatdate

#: Postfix's defaults: message_size_limit, smtpd_recipient_limit, smtpd_timeout.
MESSAGE_SIZE_LIMIT = 10_240_000
MAX_RECIPIENTS = 1000
TIMEOUT = 300.0
#: Postfix's hopcount_limit: more Received fields than this is a mail loop (for example
#: two virtual servers that disagree, during a mailbox move, on where a mailbox lives).
MAX_HOPS = 50

_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    message_size_limit: int = MESSAGE_SIZE_LIMIT
    max_recipients: int = MAX_RECIPIENTS
    timeout: float = TIMEOUT


def bare_line_ending(data: bytes) -> str | None:
    """"bare LF" / "bare CR" if ``data`` has a line ending other than CRLF (the SMTP
    smuggling vector: another server may end DATA at ``<LF>.<LF>``), else None."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf:
        return "bare LF"
    if data.count(b"\r") != crlf:
        return "bare CR"
    return None


def valid_address(address: str) -> bool:
    """A mailbox ``local@domain`` whose domain is a host name (or address literal)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 254:
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return True
    try:
        ascii_domain = domain.encode("idna").decode()
    except UnicodeError:
        return False
    return bool(_DOMAIN.match(ascii_domain))


def relay_allowed(recipient_is_local: bool, authenticated: bool) -> bool:
    """Never an open relay: other domains only for authenticated clients."""
    return recipient_is_local or authenticated


def may_send_as(sender: str, allowed: set[str]) -> bool:
    return sender.lower() in {a.lower() for a in allowed}


def size_hint(mail_options: list[str]) -> int:
    """The SIZE= parameter of MAIL FROM (RFC 1870), 0 if absent."""
    for option in mail_options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def message_id(message: bytes) -> str | None:
    end = _HEADER_END.search(message)
    head = message[: end.start()] if end else message[:65536]
    found = _MESSAGE_ID.search(head)
    if found is None:
        return None
    value = found.group(1).decode("utf-8", "replace").strip()
    return value[:250] or None


def hop_count(message: bytes) -> int:
    """The number of Received fields in the header section."""
    end = _HEADER_END.search(message)
    return len(_RECEIVED.findall(message[: end.start()] if end else message[:65536]))


def received_header(
    *,
    helo: str,
    client_address: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    now: float,
) -> bytes:
    """The Received trace field (RFC 5321 4.4), folded, CRLF-terminated."""
    helo = "".join(c for c in helo if c.isprintable() and c not in "()")[:100]
    line = f"Received: from {helo} ([{client_address}])\r\n\tby {hostname} (clustermail) "
    line += f"with {protocol} id {queue_id}"
    if recipient is not None:
        line += f"\r\n\tfor <{recipient}>"
    line += f"; {formatdate(now, usegmt=True)}\r\n"
    return line.encode("utf-8", "replace")


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, utf8: bool) -> str:
    """RFC 3848 / RFC 6531 "with" keyword: ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPS..."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if utf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")
