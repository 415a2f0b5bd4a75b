"""Commands of the authenticated state (RFC 3501 §6.3, also valid with a mailbox
selected): SELECT/EXAMINE, mailbox management, STATUS, APPEND, IDLE, NAMESPACE,
ENABLE and the quota commands (RFC 9208)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response as r
from clustermail.mail.imap.command_table import AUTHENTICATED, CommandTable
from clustermail.mail.imap.context import SessionContext
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.framing import CommandFrame
from clustermail.mail.imap.listing import list_responses, lsub_responses, status_response
from clustermail.mail.imap.mailbox_pattern import PatternTooLong
from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.imap.outcome import Done, SessionClosed, bad, no
from clustermail.mail.imap.parser import parse_idle_done
from clustermail.mail.store import MailboxDatabase, MessageTooLargeError, QuotaExceededError, names
from clustermail.mail.store import flags as store_flags

DELIMITER = names.DELIMITER

COMMANDS: CommandTable[SessionContext] = CommandTable()


_CLOSED = r.untagged_status("OK", "Previous mailbox closed.", r.CLOSED)


@functools.lru_cache(maxsize=1024)
def _select_status(unseen: int | None, uidvalidity: int, uidnext: int) -> bytes:
    """The UNSEEN, UIDVALIDITY and UIDNEXT lines of a SELECT answer, rendered once per
    folder state rather than on every SELECT."""
    lines = (
        [] if unseen is None else [r.untagged_status("OK", "First unseen.", r.code_unseen(unseen))]
    )
    lines.append(r.untagged_status("OK", "UIDs valid", r.code_uidvalidity(uidvalidity)))
    lines.append(r.untagged_status("OK", "Predicted next UID", r.code_uidnext(uidnext)))
    return b"".join(lines)


@COMMANDS.command(c.Select, AUTHENTICATED)
async def select(s: SessionContext, cmd: c.Select) -> Done:
    db, mailbox = s.require()
    if s.view is not None:
        s.unselect()
        s.send(_CLOSED)
    folder = names.normalize(cmd.mailbox)
    # The shared snapshot is current as of this read; the session gets its own copy.
    changes = db.change_count  # before the read: a commit meanwhile is looked at later
    snap = db.folder_snapshot(mailbox, folder)
    view = MailboxView.from_snapshot(folder, snap, read_only=cmd.read_only)
    view.change_count = changes
    fresh = True  # nothing awaited since the read
    if not snap.recent:
        view.recent = set()
    elif not cmd.read_only:
        view.recent = set(await db.claim_recent(mailbox, folder))
        fresh = False
    elif snap.recent_exact:
        view.recent = set(snap.recent)
    else:
        view.recent = set(db.recent_among(mailbox, folder, snap.recent))
    s.select(db, mailbox, view)
    for line in view.flags_announcement():
        s.send(line)
    s.send(r.exists(view.exists))
    s.send(r.recent(len(view.recent)))
    # The view's flags are the snapshot's until it syncs: its first unseen message too.
    s.send(_select_status(snap.first_unseen, view.uidvalidity, view.uidnext))
    # Read just now with nothing awaited: no news to look for before the tagged answer.
    s.view_current = fresh
    code = r.READ_ONLY if cmd.read_only else r.READ_WRITE
    return Done(f"{cmd.command_name.capitalize()} completed.", code)


@COMMANDS.command(c.Create, AUTHENTICATED)
async def create(s: SessionContext, cmd: c.Create) -> Done:
    db, mailbox = s.require()
    if cmd.special_use:
        no("Setting special-use attributes is not supported.", r.CANNOT)
    name = cmd.mailbox.rstrip(DELIMITER) or cmd.mailbox
    if names.normalize(name) == names.INBOX:
        no("Mailbox already exists.", r.ALREADYEXISTS)
    await db.create_folder(mailbox, name)
    return Done("Create completed.")


@COMMANDS.command(c.Delete, AUTHENTICATED)
async def delete(s: SessionContext, cmd: c.Delete) -> Done:
    db, mailbox = s.require()
    folder = names.normalize(cmd.mailbox)
    if folder == names.INBOX:
        no("INBOX can't be deleted.", r.CANNOT)
    if s.view is not None and s.view.folder == folder:
        s.unselect()
        s.send(r.untagged_status("BYE", "Selected mailbox was deleted, have to disconnect."))
    await db.delete_folder(mailbox, folder)
    return Done("Delete completed.")


@COMMANDS.command(c.Rename, AUTHENTICATED)
async def rename(s: SessionContext, cmd: c.Rename) -> Done:
    db, mailbox = s.require()
    old = names.normalize(cmd.old)
    new = names.normalize(cmd.new)
    if new == names.INBOX:
        no("Mailbox already exists.", r.ALREADYEXISTS)
    moved = await db.rename_folder(mailbox, old, new)
    if s.view is not None and old != names.INBOX:
        for before, after in moved:
            if s.view.folder == before:
                s.view.folder = after
    return Done("Rename completed.")


@COMMANDS.command(c.Subscribe, AUTHENTICATED)
async def subscribe(s: SessionContext, cmd: c.Subscribe) -> Done:
    db, mailbox = s.require()
    await db.subscribe(mailbox, cmd.mailbox, True)
    return Done("Subscribe completed.")


@COMMANDS.command(c.Unsubscribe, AUTHENTICATED)
async def unsubscribe(s: SessionContext, cmd: c.Unsubscribe) -> Done:
    db, mailbox = s.require()
    await db.subscribe(mailbox, cmd.mailbox, False)
    return Done("Unsubscribe completed.")


def _send_listing(s: SessionContext, lines: Callable[[], Iterable[bytes]], done: str) -> Done:
    """LIST and LSUB: every line, or BAD for a pattern past the length cap (before any
    line is sent)."""
    try:
        listing = list(lines())
    except PatternTooLong as exc:
        bad(str(exc))
    for line in listing:
        s.send(line)
    return Done(done)


@COMMANDS.command(c.List, AUTHENTICATED)
async def list_(s: SessionContext, cmd: c.List) -> Done:
    db, mailbox = s.require()
    return _send_listing(s, lambda: list_responses(db, mailbox, cmd), "List completed.")


@COMMANDS.command(c.Lsub, AUTHENTICATED)
async def lsub(s: SessionContext, cmd: c.Lsub) -> Done:
    db, mailbox = s.require()
    return _send_listing(s, lambda: lsub_responses(db, mailbox, cmd), "Lsub completed.")


@COMMANDS.command(c.Status, AUTHENTICATED)
async def status(s: SessionContext, cmd: c.Status) -> Done:
    db, mailbox = s.require()
    folder = names.normalize(cmd.mailbox)
    s.send(status_response(db, mailbox, folder, cmd.items))
    if s.view is not None and s.view.folder == folder:
        # RFC 3501 §6.3.10: STATUS is not for the selected mailbox (the client knows).
        return Done("Status on selected mailbox completed.", r.CLIENTBUG)
    return Done("Status completed.")


@COMMANDS.command(c.Append, AUTHENTICATED)
async def append(s: SessionContext, cmd: c.Append) -> Done:
    db, mailbox = s.require()
    if not cmd.message:
        no("Can't save a zero byte message.")
    folder = names.normalize(cmd.mailbox)
    when = None if cmd.internal_date is None else int(cmd.internal_date.timestamp())
    flags = list(cmd.flags)
    result = await db.append(mailbox, folder, cmd.message, flag_names=flags, internaldate=when)
    if s.view is not None and s.view.folder == folder:
        s.dirty = True
    return Done("Append completed.", r.code_appenduid(result.uidvalidity, result.uid))


def check_append(s: SessionContext, cmd: c.Append, size: int) -> None:
    """What APPEND can check before its message is sent (the session calls it before the
    ``+`` of a synchronizing literal), in the order the store checks them after: size,
    flags, folder, quota. Raises what the append would raise; returns when it may go on."""
    db, mailbox = s.require()
    if size == 0:
        no("Can't save a zero byte message.")
    limit = s.append_limit()
    if size > limit:
        raise MessageTooLargeError(size, limit)
    store_flags.parse_flags(list(cmd.flags))
    db.status(mailbox, names.normalize(cmd.mailbox))  # the folder exists
    report = db.quota(mailbox)
    quota = report.limits.prohibit_send_receive
    if quota is not None and report.used_bytes + size > quota:
        raise QuotaExceededError(mailbox, report.used_bytes, size, quota)


@COMMANDS.command(c.Enable, AUTHENTICATED)
async def enable(s: SessionContext, cmd: c.Enable) -> Done:
    # Nothing we announce can be enabled yet; no ENABLED line, as Dovecot does then.
    return Done("Enabled.")


@COMMANDS.command(c.Idle, AUTHENTICATED)
async def idle(s: SessionContext, cmd: c.Idle) -> Done:
    s.send(r.continuation("idling"))
    await s.flush()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.config.idle_timeout
    keepalive = s.config.idle_keepalive
    next_keepalive = loop.time() + keepalive
    s.framer.line_mode = True
    try:
        while True:
            event = s.framer.next_event()
            if event is not None:
                break
            s.changed.clear()
            if s.view is not None and s.dirty:
                await s.sync(allow_expunge=True)
                await s.flush()
            now = loop.time()
            left = deadline - now
            if left <= 0:
                raise TimeoutError
            if now >= next_keepalive:
                # Dovecot's "Still here": NAT boxes and firewalls that drop quiet
                # connections keep this one, and the client sees a dead one. It does not
                # move the inactivity deadline (RFC 2177: the client re-IDLEs in time).
                s.send(STILL_HERE)
                await s.flush()
                next_keepalive = now + keepalive
            try:
                data = await _read_or_change(s, min(left, next_keepalive - now))
            except TimeoutError:
                continue  # the deadline or a keepalive: both looked at above
            if data is None:
                continue
            if not data:
                raise SessionClosed
            s.framer.feed(data)
    finally:
        s.framer.line_mode = False
    if not isinstance(event, CommandFrame):
        bad("Expected DONE.")
    try:
        parse_idle_done(event.raw)
    except ParseError:
        bad("Expected DONE.")
    return Done("Idle completed.")


#: The untagged answer an idling session gets every ``idle_keepalive`` seconds.
STILL_HERE = b"* OK Still here\r\n"


async def _read_or_change(s: SessionContext, timeout: float) -> bytes | None:
    """Client bytes (b"" at EOF), or None when the mailbox changed first."""
    read = asyncio.ensure_future(s.reader.read(65536))
    change = asyncio.ensure_future(s.changed.wait())
    try:
        await asyncio.wait({read, change}, timeout=timeout, return_when="FIRST_COMPLETED")
    finally:
        change.cancel()
        if not read.done():
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await read
    if read.cancelled():
        if not s.changed.is_set():
            raise TimeoutError
        return None
    return read.result()


@COMMANDS.command(c.Namespace, AUTHENTICATED)
async def namespace(s: SessionContext, cmd: c.Namespace) -> Done:
    s.send(r.namespace_data([("", DELIMITER)], None, None))
    return Done("Namespace completed.")


@COMMANDS.command(c.GetQuotaRoot, AUTHENTICATED)
async def getquotaroot(s: SessionContext, cmd: c.GetQuotaRoot) -> Done:
    db, mailbox = s.require()
    folder = names.normalize(cmd.mailbox)
    db.status(mailbox, folder)  # NONEXISTENT for a folder that is not there
    s.send(r.quotaroot_data(folder, [""]))
    s.send(_quota_data(db, mailbox))
    return Done("Getquotaroot completed.")


@COMMANDS.command(c.GetQuota, AUTHENTICATED)
async def getquota(s: SessionContext, cmd: c.GetQuota) -> Done:
    db, mailbox = s.require()
    if cmd.root != "":
        no("No such quota root.", r.NONEXISTENT)
    s.send(_quota_data(db, mailbox))
    return Done("Getquota completed.")


@COMMANDS.command(c.SetQuota, AUTHENTICATED)
async def setquota(s: SessionContext, cmd: c.SetQuota) -> Done:
    no("Quotas are set by the administrator.", r.NOPERM)


def _quota_data(db: MailboxDatabase, mailbox: str) -> bytes:
    report = db.quota(mailbox)
    limit = report.limits.prohibit_send_receive
    resources = [] if limit is None else [("STORAGE", report.used_bytes // 1024, limit // 1024)]
    return r.quota_data("", resources)
