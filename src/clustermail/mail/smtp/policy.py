"""SMTP policy as pure functions: limits, relay rules, message checks, Received header,
and the error budget of a session."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate, getaddresses

#: Postfix's defaults: message_size_limit, smtpd_recipient_limit, smtpd_timeout.
MESSAGE_SIZE_LIMIT = 10_240_000
MAX_RECIPIENTS = 1000
TIMEOUT = 300.0
#: Postfix's hopcount_limit: more Received fields than this is a mail loop (for example
#: two virtual servers that disagree, during a mailbox move, on where a mailbox lives).
MAX_HOPS = 50
#: Postfix's smtpd_soft_error_limit, smtpd_hard_error_limit, smtpd_error_sleep_time and
#: smtpd_junk_command_limit: after 10 errors (4xx/5xx replies: unknown recipients,
#: syntax errors, failed logins...) every reply waits 1 s; at 20 the session ends with
#: 421; past 100 NOOP/RSET/VRFY/HELP/EHLO/HELO each one counts as an error. An accepted
#: message starts the counts over.
SOFT_ERROR_LIMIT = 10
HARD_ERROR_LIMIT = 20
ERROR_SLEEP_TIME = 1.0
JUNK_COMMAND_LIMIT = 100
#: The longest DATA line accepted (octets, CRLF included). RFC 5322 asks for at most
#: 998, but generated HTML and unwrapped base64 break that; Postfix accepts any length
#: (stored in line_length_limit = 2048-byte pieces, joined again on delivery). Longer
#: lines are refused (500 5.5.6) once the data has been read.
MAX_LINE_LENGTH = 65_536
MIN_LINE_LENGTH = 1000
#: On the ports that require AUTH (587, 465), a client must have logged in this long
#: after connecting, or it is disconnected (421 4.4.2).
LOGIN_TIMEOUT = 60.0
#: Once a command line has begun, all of it must arrive within this many seconds, or the
#: session ends (421 4.4.2). The idle timeout counts complete commands only, so without
#: it one line sent a byte at a time would hold a session for the whole idle timeout
#: (Postfix bounds each read by smtpd_timeout; this bounds the line as a whole).
LINE_TIMEOUT = 60.0

_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
#: Unicode's control characters (category Cc: C0, DEL and C1), all of them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    message_size_limit: int = MESSAGE_SIZE_LIMIT
    max_recipients: int = MAX_RECIPIENTS
    timeout: float = TIMEOUT
    max_line_length: int = MAX_LINE_LENGTH
    soft_error_limit: int = SOFT_ERROR_LIMIT
    hard_error_limit: int = HARD_ERROR_LIMIT
    error_sleep_time: float = ERROR_SLEEP_TIME
    junk_command_limit: int = JUNK_COMMAND_LIMIT
    login_timeout: float = LOGIN_TIMEOUT
    line_timeout: float = LINE_TIMEOUT
    #: An authenticated client's From: header must name only addresses it may send as
    #: (Postfix's reject_sender_login_mismatch applies that to the envelope sender; the
    #: envelope sender is always checked here).
    reject_sender_login_mismatch: bool = True


@dataclass
class SessionErrors:
    """The error budget of one SMTP session (Postfix's error and junk counters)."""

    limits: SmtpLimits = field(default_factory=SmtpLimits)
    errors: int = 0
    junk: int = 0

    def replied(self, reply: str) -> None:
        """Counts a final reply line: 4xx and 5xx are errors."""
        if len(reply) >= 3 and reply[0] in "45" and reply[:3].isdigit() \
                and reply[3:4] != "-":
            self.errors += 1

    def junk_command(self) -> None:
        self.junk += 1
        if self.junk > self.limits.junk_command_limit:
            self.errors += 1

    def delivered(self) -> None:
        self.errors = self.junk = 0

    def delay(self) -> float:
        """How long to wait before the next reply (the tarpit)."""
        return self.limits.error_sleep_time if self.errors >= self.limits.soft_error_limit \
            else 0.0

    def exhausted(self) -> bool:
        return self.errors >= self.limits.hard_error_limit


def bare_line_ending(data: bytes) -> str | None:
    """"bare LF" / "bare CR" if ``data`` has a line ending other than CRLF (the SMTP
    smuggling vector: another server may end DATA at ``<LF>.<LF>``), else None."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf:
        return "bare LF"
    if data.count(b"\r") != crlf:
        return "bare CR"
    return None


def has_control(text: str) -> bool:
    """A control character (C0, DEL, C1): never part of an address."""
    return _CONTROL.search(text) is not None


def printable(text: str, limit: int = 254) -> str:
    """``text`` safe to echo in a reply: controls shown as ``?``, cut to ``limit``."""
    return _CONTROL.sub("?", text[:limit])


def valid_address(address: str) -> bool:
    """A mailbox ``local@domain`` whose domain is a host name (or address literal), with
    no control character anywhere (not even quoted)."""
    if has_control(address):
        return False
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 254:
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return True
    if domain.isascii():  # the IDNA codec leaves ASCII as it is (or refuses what _DOMAIN does)
        return _DOMAIN.match(domain) is not None
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


def header_from(message: bytes) -> list[str] | None:
    """The addresses of every From: field in the header section ([] without one); None
    when a From: field has no parsable address."""
    end = _HEADER_END.search(message)
    head = message[: end.start()] if end else message[:65536]
    text = head.decode("utf-8", "replace").replace("\r\n", "\n")
    fields: list[list[str]] = []
    folding = False
    for line in text.split("\n"):
        if folding and line[:1] in (" ", "\t"):
            fields[-1].append(line)  # a folded continuation of a From: field
            continue
        name, colon, value = line.partition(":")
        folding = bool(colon) and name.strip().lower() == "from"
        if folding:
            fields.append([value])
    found: list[str] = []
    for parts in fields:
        addresses = [a for _, a in getaddresses([" ".join(parts)]) if a]
        if not addresses or not all(valid_address(a) for a in addresses):
            return None
        found += addresses
    return found


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
    line += f"; {_date(now)}\r\n"
    return line.encode("utf-8", "replace")


def _date(now: float) -> str:
    """The RFC 5322 date of ``now``, formatted once per second (not once per message)."""
    global _last_date
    second = int(now // 1)
    if _last_date[0] != second:
        _last_date = (second, formatdate(second, usegmt=True))
    return _last_date[1]


_last_date: tuple[int, str] = (-1 << 62, "")


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, utf8: bool) -> str:
    """RFC 3848 / RFC 6531 "with" keyword: ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPS..."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if utf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")
