"""Delivery of one message to many recipients of a database, inside one write job (so the
group-commit writer commits it together with whatever else is queued). The message is
stored once (single-instance) however many recipients get it."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from clustermail.mail.store import (
    bodies,
    flags,
    folders,
    index,
    mailboxes,
    messages,
    names,
    quota,
)
from clustermail.mail.store.bodies import PreparedMessage
from clustermail.mail.store.types import (
    DatabaseSettings,
    DeliveryResult,
    DeliveryStatus,
    RecipientResult,
)


def deliver(
    conn: sqlite3.Connection,
    message: PreparedMessage,
    recipients: Sequence[str],
    folder: str,
    settings: DatabaseSettings,
    now: float,
    internaldate: int | None = None,
    flag_mask: int = 0,
) -> DeliveryResult:
    target = names.normalize(folder)
    date = int(now) if internaldate is None else internaldate
    body_id: int | None = None
    charged = 0  # what one copy charges a quota, from the stored body (see bodies.add_charged)
    results: list[RecipientResult] = []
    for rcpt in dict.fromkeys(recipients):  # each mailbox once, in order
        found = mailboxes.find_with_folder(conn, rcpt, target)
        if found is None:
            results.append(
                RecipientResult(
                    rcpt, DeliveryStatus.REFUSED, "5.1.1", "no such mailbox in this database"
                )
            )
            continue
        box, row, known_chunk = found
        last_chunk: index.LastChunk | index.ReadIt = known_chunk
        limits = box.limits(settings)
        decision = quota.delivery_decision(
            box.used_bytes, message.charged, limits, full_is_permanent=settings.quota_full_permanent
        )
        if not decision.accepted:
            results.append(
                RecipientResult(rcpt, DeliveryStatus.REFUSED, decision.code, decision.reason)
            )
            continue
        # A missing target folder (e.g. a filing rule's folder was deleted): INBOX gets it.
        if row is None:
            row, last_chunk = folders.get(conn, rcpt, names.INBOX), index.READ_IT
        if body_id is None:
            body_id, charged = bodies.add_charged(conn, message)
        else:
            bodies.reference(conn, [body_id])
        (uid,), _ = messages.insert(
            conn,
            row,
            [(body_id, flag_mask | flags.RECENT, None, date, message.size)],
            charged,
            last_chunk,
        )
        results.append(
            RecipientResult(
                rcpt, DeliveryStatus.DELIVERED, "2.0.0", "delivered", row.name, row.uidvalidity, uid
            )
        )
        used = box.used_bytes + message.charged
        if quota.should_warn(used, limits, box.last_warning, now):
            _deliver_warning(conn, box, used, limits, now)
    return DeliveryResult(message.size, results)


def _deliver_warning(
    conn: sqlite3.Connection,
    box: mailboxes.MailboxRow,
    used: int,
    limits: quota.QuotaLimits,
    now: float,
) -> None:
    """The quota warning message, at most once a day; it is exempt from the quota itself."""
    raw = quota.warning_message(box.name, used, limits, now)
    prepared = bodies.prepare(raw, max(len(raw) * 2, 1))
    inbox = folders.get(conn, box.name, names.INBOX)
    body_id = bodies.add(conn, prepared)
    messages.insert(conn, inbox, [(body_id, flags.RECENT, None, int(now), prepared.size)])
    conn.execute("UPDATE mailbox SET last_warning = ? WHERE id = ?", (now, box.id))
