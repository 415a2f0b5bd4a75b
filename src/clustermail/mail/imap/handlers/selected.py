"""Commands of the selected state (RFC 3501 §6.4, with UID EXPUNGE, MOVE and UNSELECT):
they work on the selected mailbox through the session's :class:`MailboxView`."""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Iterable, Sequence

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response as r
from clustermail.mail.imap import search_hits, search_prefilter
from clustermail.mail.imap.command_table import SELECTED, CommandFlag, CommandTable
from clustermail.mail.imap.context import SessionContext
from clustermail.mail.imap.fetch import (
    PREFETCH,
    MessageFetcher,
    SearchMessage,
    fetch_parts,
    flag_search,
    needs_structure,
    prefetcher,
    sets_seen,
    whole_message,
)
from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.imap.outcome import Done, bad, no
from clustermail.mail.imap.search import AndKey, SearchContext, SearchKey, matches
from clustermail.mail.imap.sequence import SequenceSet
from clustermail.mail.store import (
    FolderNotFoundError,
    MailboxDatabase,
    MessageNotFoundError,
    names,
)
from clustermail.mail.store import flags as store_flags
from clustermail.mail.store.messages import FlagMode

COMMANDS: CommandTable[SessionContext] = CommandTable()
USES_SEQS, BREAKS_SEQS = CommandFlag.USES_SEQS, CommandFlag.BREAKS_SEQS

#: FETCH reads messages at least this large in a worker thread, off the event loop.
OFFLOAD_FETCH_AT = 256 * 1024

_STORE_MODES: dict[str, FlagMode] = {
    "replace": "set", "add": "add", "remove": "remove",
}


@COMMANDS.command(c.Check, SELECTED)
async def check(s: SessionContext, cmd: c.Check) -> Done:
    s.dirty = True
    return Done("Check completed.")


@COMMANDS.command(c.Close, SELECTED)
async def close(s: SessionContext, cmd: c.Close) -> Done:
    db, mailbox, view = s.selected()
    if not view.read_only:
        with contextlib.suppress(FolderNotFoundError):
            await db.expunge(mailbox, view.folder)
    s.unselect()
    return Done("Close completed.")


@COMMANDS.command(c.Unselect, SELECTED)
async def unselect(s: SessionContext, cmd: c.Unselect) -> Done:
    s.unselect()
    return Done("Unselect completed.")


@COMMANDS.command(c.Expunge, SELECTED, BREAKS_SEQS)
async def expunge(s: SessionContext, cmd: c.Expunge) -> Done:
    db, mailbox, view = s.selected()
    if view.read_only:
        no("Mailbox is read-only.", r.READ_ONLY)
    uids = None
    if cmd.uid_set is not None:
        seqs = s.resolve(cmd.uid_set, True)
        uids = [view.uids[n - 1] for n in seqs]
        if not uids:
            return Done("Expunge completed.")
    gone = await db.expunge(mailbox, view.folder, uids)
    s.expunge_now(view, gone)
    s.dirty = True
    return Done("Expunge completed.")


@COMMANDS.command(c.Search, SELECTED, USES_SEQS)
async def search(s: SessionContext, cmd: c.Search) -> Done:
    db, mailbox, view = s.selected()
    context = SearchContext(max_seq=view.exists, max_uid=view.max_uid())
    hits = flag_search(cmd.key, view, context)
    if hits is not None:  # flags, numbers and UIDs only: no message is read
        numbers = view.uids if cmd.uid else range(1, view.exists + 1)
        s.send(search_hits.search_line(numbers, hits))
        return Done("Search completed.")
    # Headers and bodies: reading and decoding grow with the messages, so off the loop.
    # The view stays as it is meanwhile: this session runs nothing else until it is done.
    found = await s.offload(_search_messages, db, mailbox, view, cmd, context)
    s.send(r.search_data(found))
    return Done("Search completed.")


def _search_messages(
    db: MailboxDatabase, mailbox: str, view: MailboxView, cmd: c.Search, context: SearchContext
) -> list[int]:
    found: list[int] = []
    # Messages whose raw bytes rule them out are not decoded at all (search_prefilter).
    pre = search_prefilter.build(cmd.key)
    passed = None
    if pre is not None:
        uids = _cheap_part(cmd.key, view, context)
        passed = search_prefilter.candidates(db, mailbox, view.folder, uids, pre, view.uidvalidity)
    seqs: Iterable[tuple[int, int]] = (
        enumerate(view.uids, 1)
        if passed is None
        else ((bisect.bisect_left(view.uids, uid) + 1, uid) for uid in sorted(passed))
    )
    for seq, uid in seqs:
        msg = SearchMessage(
            view,
            seq,
            MessageFetcher(db, mailbox, view.folder, uid, view.uidvalidity),
            None if passed is None else passed[uid],  # the header block, if at hand
        )
        try:
            if matches(cmd.key, msg, context):
                found.append(uid if cmd.uid else seq)
        except MessageNotFoundError:
            continue
    return found


def _cheap_part(key: SearchKey, view: MailboxView, context: SearchContext) -> Sequence[int]:
    """The UIDs that pass the flag, number and UID keys ANDed with the rest of ``key``
    (UNSEEN BODY x, UID 100:200 SUBJECT y): only their bytes need reading."""
    if not isinstance(key, AndKey):
        return view.uids
    mask: Sequence[int] | None = None
    for part in key.keys:
        hits = flag_search(part, view, context)
        if hits is not None:
            mask = hits if mask is None else [a and b for a, b in zip(mask, hits, strict=True)]
    return view.uids if mask is None else list(itertools.compress(view.uids, mask))


@COMMANDS.command(c.Fetch, SELECTED, USES_SEQS)
async def fetch(s: SessionContext, cmd: c.Fetch) -> Done:
    db, mailbox, view = s.selected()
    if cmd.changed_since is not None:
        bad("CHANGEDSINCE needs CONDSTORE, which is not enabled.")
    seqs = s.resolve(cmd.sequence_set, cmd.uid)
    seen_now: set[int] = set()
    items = cmd.items
    if _peek_of_whole(items):  # BODY.PEEK[] alone, the common single-message read
        if len(seqs) == 1 and view.sizes[seqs[0] - 1] < OFFLOAD_FETCH_AT:
            _send_whole(s, db, mailbox, view, seqs[0], cmd.uid)
            return _FETCHED
        asked_flags, reads_message = False, True
    else:
        asked_flags, reads_message = _asks_flags(items), needs_structure(items)
        if sets_seen(items) and not view.read_only:
            seen_now = await _implicit_seen(s, view, seqs)
    missing = False
    prefetch = prefetcher(items) if len(seqs) > 1 else None
    for n, seq in enumerate(seqs):
        if prefetch is not None and n % PREFETCH == 0:
            chunk = [view.uids[x - 1] for x in seqs[n : n + PREFETCH]]
            prefetch(db, mailbox, view.folder, view.uidvalidity, chunk)
        uid = view.uids[seq - 1]
        fetcher = MessageFetcher(db, mailbox, view.folder, uid, view.uidvalidity)
        try:
            if reads_message and view.sizes[seq - 1] >= OFFLOAD_FETCH_AT:
                parts = await s.offload(fetch_parts, fetcher, view, seq, items,
                                        with_uid=cmd.uid)
            else:
                parts = fetch_parts(fetcher, view, seq, items, with_uid=cmd.uid)
        except MessageNotFoundError:
            missing = True
            continue
        if seq in seen_now and not asked_flags:
            parts.insert(0, b"FLAGS " + view.flag_bytes(seq))
        s.send(r.fetch_line(seq, parts))
        await s.maybe_flush()
    if missing:
        no("Some of the requested messages no longer exist.", r.EXPUNGEISSUED)
    return _FETCHED


_FETCHED = Done("Fetch completed.")


def _send_whole(
    s: SessionContext, db: MailboxDatabase, mailbox: str, view: MailboxView, seq: int, uid: bool
) -> None:
    """``FETCH n BODY.PEEK[]`` of one message: its stored bytes, read on the loop, as
    :func:`fetch_parts` and :func:`response.fetch_line` would put them (``UID`` first for
    UID FETCH), copied once; the message gone is the tagged NO of the general path."""
    number = view.uids[seq - 1]
    try:
        body = db.fetch_raw(mailbox, view.folder, number)
    except MessageNotFoundError:
        no("Some of the requested messages no longer exist.", r.EXPUNGEISSUED)
    s.send(b"* %d FETCH (%sBODY[] {%d}\r\n%s)\r\n"
           % (seq, b"UID %d " % number if uid else b"", len(body), body))


def _peek_of_whole(items: Sequence[c.FetchItem]) -> bool:
    """Just BODY.PEEK[]: no flags to set, and the message's bytes are the answer."""
    if len(items) != 1:
        return False
    item = items[0]
    return isinstance(item, c.BodySection) and item.peek and whole_message(item)


def _asks_flags(items: Sequence[c.FetchItem]) -> bool:
    return any(isinstance(i, c.FetchAttribute) and i.name == "FLAGS" for i in items)


async def _implicit_seen(s: SessionContext, view: MailboxView, seqs: list[int]) -> set[int]:
    """Sets the \\Seen of BODY[] (RFC 3501 §6.4.5) on the messages that lack it; the
    sequence numbers whose flags changed."""
    unseen = [
        view.uids[n - 1]
        for n in seqs
        if not view.flags[n - 1] & store_flags.SEEN and view.uids[n - 1] not in view.pending_expunge
    ]
    return await _change_flags(s, view, unseen, ["\\Seen"], "add") if unseen else set()


@COMMANDS.command(c.Store, SELECTED, USES_SEQS)
async def store(s: SessionContext, cmd: c.Store) -> Done:
    db, _mailbox, view = s.selected()
    if cmd.unchanged_since is not None:
        bad("UNCHANGEDSINCE needs CONDSTORE, which is not enabled.")
    if view.read_only:
        no("Mailbox is read-only.", r.READ_ONLY)
    seqs = s.resolve(cmd.sequence_set, cmd.uid)
    flags = list(cmd.flags)
    mask, keywords = store_flags.parse_flags(flags)  # BAD for an invalid flag up front
    mode = _STORE_MODES[cmd.mode]
    if db.change_count != view.change_count:
        # Other sessions' changes first (flag news from memory; expunges stay deferred,
        # so the sequence numbers resolved above still hold): then the view is exact.
        await s.sync(allow_expunge=False)
    kept = [n for n in seqs if view.uids[n - 1] not in view.pending_expunge]
    changed: set[int] = set()
    if kept and not (db.change_count == view.change_count
                     and view.unchanged_by(kept, mask, keywords, mode)):
        # A STORE that would change nothing — the view holds every commit so far — is
        # not written (no writer job, no commit), as Dovecot drops a no-op flag update.
        changed = await _change_flags(s, view, [view.uids[n - 1] for n in kept], flags, mode)
    if keywords and cmd.mode != "remove" and view.new_keywords(keywords):
        for line in view.flags_announcement():
            s.send(line)
    if not cmd.silent:
        # Only messages whose flags changed (a no-op STORE is answered with OK alone).
        for seq in sorted(changed):
            parts = [b"UID %d" % view.uids[seq - 1]] if cmd.uid else []
            parts.append(b"FLAGS " + view.flag_bytes(seq))
            s.send(r.fetch_line(seq, parts))
            await s.maybe_flush()
    return Done("Store completed.")


async def _change_flags(
    s: SessionContext,
    view: MailboxView,
    uids: list[int],
    flags: list[str],
    mode: FlagMode,
) -> set[int]:
    """Changes flags in the store, then in the view; the sequence numbers whose flags
    changed (FETCH's implicit \\Seen and STORE)."""
    db, mailbox = s.require()
    result = await db.set_flags(mailbox, view.folder, uids, flags, mode)
    changed: set[int] = set()
    for change in result.changed:
        seq = view.set_flags(change.uid, change.flags & ~store_flags.RECENT, change.keywords)
        if seq is not None:
            changed.add(seq)
    s.dirty = True
    return changed


@COMMANDS.command(c.Copy, SELECTED)
async def copy(s: SessionContext, cmd: c.Copy) -> Done:
    return await _copy_or_move(s, cmd.sequence_set, cmd.mailbox, cmd.uid, move=False)


@COMMANDS.command(c.Move, SELECTED, BREAKS_SEQS)
async def move(s: SessionContext, cmd: c.Move) -> Done:
    return await _copy_or_move(s, cmd.sequence_set, cmd.mailbox, cmd.uid, move=True)


async def _copy_or_move(
    s: SessionContext, seqset: SequenceSet, target: str, uid: bool, *, move: bool
) -> Done:
    db, mailbox, view = s.selected()
    if move and view.read_only:
        no("Mailbox is read-only.", r.READ_ONLY)
    seqs = s.resolve(seqset, uid)
    dest = names.normalize(target)
    uids = [view.uids[n - 1] for n in seqs if view.uids[n - 1] not in view.pending_expunge]
    db.status(mailbox, dest)  # TRYCREATE before anything else when it does not exist
    what = "Move" if move else "Copy"
    if not uids:
        return Done("No messages found.") if uid else Done(f"{what} completed.")
    if move:
        result = await db.move(mailbox, view.folder, uids, dest)
    else:
        result = await db.copy(mailbox, view.folder, uids, dest)
    s.dirty = True
    if not result.source_uids:
        return Done(f"{what} completed.")
    code = r.code_copyuid(result.uidvalidity, result.source_uids, result.dest_uids)
    if move:
        s.send(r.untagged_status("OK", "Moved UIDs.", code))
        s.expunge_now(view, result.expunged)
        return Done("Move completed.")
    return Done("Copy completed.", code)
