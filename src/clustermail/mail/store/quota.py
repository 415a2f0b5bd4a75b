"""Quota policy in three tiers, like Exchange's storage limits. Pure: usage and limits in,
decisions out; the store applies them inside its transactions."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

WARNING_INTERVAL = 24 * 3600.0  # at most one warning message a day


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Byte limits; None means unlimited. A mailbox override replaces all three at once, as
    Exchange's "use mailbox database defaults" switch does."""

    warning: int | None = None
    prohibit_send: int | None = None
    prohibit_send_receive: int | None = None

    def __post_init__(self) -> None:
        for name in ("warning", "prohibit_send", "prohibit_send_receive"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(
                    f"quota {name} must be a non-negative integer or None, got {value!r}"
                )


class QuotaState(enum.Enum):
    OK = "ok"
    WARNING = "warning"
    PROHIBIT_SEND = "prohibit-send"
    PROHIBIT_SEND_RECEIVE = "prohibit-send-receive"


def _over(used: int, limit: int | None) -> bool:
    return limit is not None and used >= limit


def state(used: int, limits: QuotaLimits) -> QuotaState:
    if _over(used, limits.prohibit_send_receive):
        return QuotaState.PROHIBIT_SEND_RECEIVE
    if _over(used, limits.prohibit_send):
        return QuotaState.PROHIBIT_SEND
    if _over(used, limits.warning):
        return QuotaState.WARNING
    return QuotaState.OK


@dataclass(frozen=True, slots=True)
class Decision:
    accepted: bool
    code: str  # RFC 3463 enhanced status code
    reason: str
    permanent: bool = False


def delivery_decision(
    used: int, size: int, limits: QuotaLimits, *, full_is_permanent: bool
) -> Decision:
    """May a message of ``size`` bytes be delivered to a mailbox using ``used`` bytes?
    Refused when it would exceed prohibit-send-receive: 5.2.2 (Exchange's NDR) or 4.2.2 when
    the database says a full mailbox is temporary (Postfix/Dovecot style). A message larger
    than the whole quota can never fit, so it is always permanent."""
    limit = limits.prohibit_send_receive
    if limit is None or used + size <= limit:
        return Decision(True, "2.0.0", "delivered")
    permanent = full_is_permanent or size > limit
    reason = f"mailbox full: {used} + {size} bytes exceeds the quota of {limit} bytes"
    return Decision(False, "5.2.2" if permanent else "4.2.2", reason, permanent)


def may_send(used: int, limits: QuotaLimits) -> Decision:
    """The check SMTP submission calls: a mailbox over prohibit-send may not send."""
    if _over(used, limits.prohibit_send) or _over(used, limits.prohibit_send_receive):
        return Decision(False, "5.2.2", "mailbox is over its send quota; delete some mail", True)
    return Decision(True, "2.0.0", "ok")


def should_warn(used: int, limits: QuotaLimits, last_warning: float | None, now: float) -> bool:
    if not _over(used, limits.warning):
        return False
    return last_warning is None or now - last_warning >= WARNING_INTERVAL


def warning_message(mailbox: str, used: int, limits: QuotaLimits, now: float) -> bytes:
    """The warning delivered to a mailbox that crossed its warning limit."""
    level = state(used, limits)
    lines = [
        "From: Mail Store <postmaster@localhost>",
        f"To: <{mailbox}>" if "@" in mailbox else f"To: {mailbox}",
        "Subject: Your mailbox is almost full",
        f"Date: {format_datetime(datetime.fromtimestamp(now, UTC))}",
        f"Message-ID: {make_msgid('quota')}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"Your mailbox uses {used} bytes.",
        f"Warning limit: {_show(limits.warning)}.",
        f"Sending is prohibited above: {_show(limits.prohibit_send)}.",
        f"Sending and receiving are prohibited above: {_show(limits.prohibit_send_receive)}.",
        f"Current state: {level.value}.",
        "",
        "Delete messages you no longer need, or empty Deleted Items, to free space.",
        "",
    ]
    return "\r\n".join(lines).encode("ascii", "replace")


def _show(limit: int | None) -> str:
    return "unlimited" if limit is None else f"{limit} bytes"
