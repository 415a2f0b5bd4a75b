"""LIST, LSUB and STATUS responses from the store's folder list (RFC 3501, 5258, 6154).

Folder names are the store's (``/`` delimiter, ``INBOX`` canonical). A name
that only exists as the parent of other folders (its folder was deleted) is
listed as ``\\Noselect`` (``\\NonExistent`` in extended LIST).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response as r
from clustermail.mail.imap.mailbox_pattern import compile_pattern
from clustermail.mail.store import MailboxDatabase, names
from clustermail.mail.store import flags as store_flags

DELIMITER = names.DELIMITER
#: STATUS items in the order they are sent (RFC 3501 order, then the extensions).
_STATUS_ORDER = (
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "HIGHESTMODSEQ",
    "SIZE",
    "DELETED",
)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    exists: bool
    special_use: str | None
    subscribed: bool
    has_children: bool


def _entries(db: MailboxDatabase, mailbox: str) -> list[_Entry]:
    folders = db.list_folders(mailbox)  # with their subscription: one read, not two
    subscribed = {f.name for f in folders if f.subscribed}
    existing = {f.name: f for f in folders}
    every = set(existing)
    for name in existing:
        levels = name.split(DELIMITER)
        for depth in range(1, len(levels)):
            every.add(DELIMITER.join(levels[:depth]))
    parents = {n.rsplit(DELIMITER, 1)[0] for n in every if DELIMITER in n}
    out = []
    for name in sorted(every, key=lambda n: (n != names.INBOX, n)):
        info = existing.get(name)
        out.append(
            _Entry(
                name,
                info is not None,
                info.special_use if info else None,
                name in subscribed,
                name in parents,
            )
        )
    return out


def list_responses(db: MailboxDatabase, mailbox: str, cmd: c.List) -> Iterator[bytes]:
    if cmd.patterns == ("",) and not cmd.extended:
        yield r.list_data(["\\Noselect"], DELIMITER, "")
        return
    patterns = [compile_pattern(cmd.reference, p) for p in cmd.patterns if p]
    entries = _entries(db, mailbox)
    subscribed_only = "SUBSCRIBED" in cmd.selection
    if subscribed_only:
        known = {e.name for e in entries}
        entries += [
            _Entry(name, False, None, True, False)
            for name in db.subscriptions(mailbox)
            if name not in known
        ]
    show_subscribed = subscribed_only or "SUBSCRIBED" in cmd.returns
    for entry in entries:
        if not any(p.matches(entry.name) for p in patterns):
            continue
        if subscribed_only and not entry.subscribed:
            continue
        if "SPECIAL-USE" in cmd.selection and not entry.special_use:
            continue
        attrs: list[str] = []
        if not entry.exists:
            attrs.append("\\NonExistent" if cmd.extended else "\\Noselect")
        if show_subscribed and entry.subscribed:
            attrs.append("\\Subscribed")
        # Extended LIST returns child and special-use information only when asked for.
        if not cmd.extended or "CHILDREN" in cmd.returns:
            attrs.append("\\HasChildren" if entry.has_children else "\\HasNoChildren")
        if entry.special_use and (not cmd.extended or "SPECIAL-USE" in cmd.returns | cmd.selection):
            attrs.append(entry.special_use)
        yield r.list_data(attrs, DELIMITER, entry.name)
        if "STATUS" in cmd.returns and entry.exists:
            yield status_response(db, mailbox, entry.name, cmd.status_items)


def lsub_responses(db: MailboxDatabase, mailbox: str, cmd: c.Lsub) -> Iterator[bytes]:
    if cmd.pattern == "":
        yield r.list_data(["\\Noselect"], DELIMITER, "", command="LSUB")
        return
    pattern = compile_pattern(cmd.reference, cmd.pattern)
    subscribed = db.subscriptions(mailbox)
    special = {f.name: f.special_use for f in db.list_folders(mailbox) if f.special_use}
    chosen = set(subscribed)
    shown: list[tuple[str, bool]] = [(n, True) for n in subscribed if pattern.matches(n)]
    # "%" may stop at a level above a subscribed name: that level is listed \Noselect.
    parents = set()
    for name in subscribed:
        levels = name.split(DELIMITER)
        for depth in range(1, len(levels)):
            parents.add(DELIMITER.join(levels[:depth]))
    shown += [(p, False) for p in parents - chosen if pattern.matches(p)]
    for name, real in sorted(shown, key=lambda x: (x[0] != names.INBOX, x[0])):
        attrs = ["\\Noselect"] if not real else [special[name]] if name in special else []
        yield r.list_data(attrs, DELIMITER, name, command="LSUB")


def status_response(db: MailboxDatabase, mailbox: str, folder: str, items: Sequence[str]) -> bytes:
    st = db.status(mailbox, folder)
    values = {
        "MESSAGES": st.messages,
        "RECENT": st.recent,
        "UIDNEXT": st.uidnext,
        "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen,
        "HIGHESTMODSEQ": st.highestmodseq,
    }
    if "SIZE" in items or "DELETED" in items:
        listing = db.list_messages(mailbox, folder)
        values["SIZE"] = sum(listing.sizes)
        values["DELETED"] = sum(1 for f in listing.flags if f & store_flags.DELETED)
    wanted = set(items)
    return r.status_data(folder, [(k, values[k]) for k in _STATUS_ORDER if k in wanted])
