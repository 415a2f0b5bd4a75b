"""Delivery status notifications (RFC 3464 multipart/report) — pure.

A DSN goes to the original envelope sender with the null reverse-path, so that it can
never cause another bounce (RFC 5321 §4.5.5). The caller enforces "never bounce a bounce":
no DSN is made for a message whose sender is null.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

FAILED = "failed"
DELAYED = "delayed"

_HEADER_END = re.compile(rb"\r?\n\r?\n")
MAX_RETURNED_HEADERS = 64 * 1024


@dataclass(frozen=True, slots=True)
class RecipientReport:
    address: str
    action: str  # "failed" or "delayed"
    status: str  # enhanced status code, e.g. 5.1.1
    diagnostic: str  # the remote reply or our reason
    remote_mta: str | None = None


def original_headers(message: bytes) -> bytes:
    """The header section of a message (for the text/rfc822-headers part), bounded."""
    match = _HEADER_END.search(message, 0, MAX_RETURNED_HEADERS + 4)
    head = message[: match.start()] if match else message[:MAX_RETURNED_HEADERS]
    return head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _rfc822_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")


def build(
    *,
    reporting_mta: str,
    original_sender: str,
    original_message_id: str | None,
    original: bytes,
    recipients: list[RecipientReport],
    arrived: float,
    now: float,
    retry_until: float | None = None,
) -> bytes:
    """The DSN message (CRLF line endings)."""
    if not recipients:
        raise ValueError("a DSN needs at least one recipient report")
    delayed = all(r.action == DELAYED for r in recipients)
    boundary = f"dsn-{uuid.uuid4().hex}"
    subject = (
        "Delivery delayed: message not yet delivered"
        if delayed
        else "Undelivered Mail Returned to Sender"
    )
    mta = _ascii(reporting_mta)
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{_ascii(original_sender)}>",
        f"Subject: {subject}",
        f"Date: {formatdate(now, usegmt=True)}",
        f"Message-ID: <{uuid.uuid4().hex}@{mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    if original_message_id:
        lines.append(f"In-Reply-To: {_ascii(original_message_id)}")
        lines.append(f"References: {_ascii(original_message_id)}")
    lines += ["", "This is a MIME-encapsulated message.", "", f"--{boundary}"]
    lines += ["Content-Type: text/plain; charset=us-ascii", ""]
    if delayed:
        lines += [
            f"This is the mail system at {mta}.",
            "",
            "Your message could not be delivered yet to the recipients below.",
            "It stays in the queue and will be tried again; you need not resend it.",
            "",
        ]
    else:
        lines += [
            f"This is the mail system at {mta}.",
            "",
            "Your message could not be delivered to the recipients below.",
            "",
        ]
    for r in recipients:
        lines.append(f"<{_ascii(r.address)}>: {_ascii(r.diagnostic)}")
    lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", ""]
    lines += [
        f"Reporting-MTA: dns; {mta}",
        f"Arrival-Date: {_rfc822_date(arrived)}",
    ]
    for r in recipients:
        lines += [
            "",
            f"Final-Recipient: rfc822; {_ascii(r.address)}",
            f"Action: {r.action}",
            f"Status: {r.status}",
        ]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {_ascii(r.remote_mta)}")
        lines.append(f"Diagnostic-Code: smtp; {_ascii(r.diagnostic)[:900]}")
        lines.append(f"Last-Attempt-Date: {_rfc822_date(now)}")
        if r.action == DELAYED and retry_until is not None:
            lines.append(f"Will-Retry-Until: {_rfc822_date(retry_until)}")
    lines += ["", f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    text = "\r\n".join(lines).encode() + b"\r\n"
    return text + original_headers(original) + f"\r\n\r\n--{boundary}--\r\n".encode()
