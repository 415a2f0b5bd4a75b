"""The selected mailbox as one session sees it: seq ↔ uid map, flags, \\Recent, pending news.

RFC 3501 keeps each session's message numbers stable until the server tells the
client otherwise, so a session works on its own copy of the folder listing and
moves it forward only through :meth:`MailboxView.sync`, which turns the store's
change log (:meth:`MailboxDatabase.changes_since`) into untagged EXPUNGE,
EXISTS, RECENT and FETCH responses. Expunges are held back while a command
that must not see them runs (FETCH, STORE, SEARCH without UID, §7.4.1) and the
affected numbers stay valid ("ghosts") until they can be announced.

Pure: no I/O. The session feeds it listings and change sets read from the store.
"""

from __future__ import annotations

import bisect
import functools
from array import array
from collections.abc import Iterable, Iterator
from itertools import compress
from typing import TypeAlias

from clustermail.mail.imap import response as r
from clustermail.mail.store import FolderChanges, FolderListing
from clustermail.mail.store import flags as f
from clustermail.mail.store.index import Columns
from clustermail.mail.store.messages import FlagMode
from clustermail.mail.store.snapshot import FolderSnapshot

#: A column of the view: an array of its own, or a read-only view of a snapshot's.
Column: TypeAlias = "array[int] | memoryview"

#: Flags a client may store; PERMANENTFLAGS adds ``\\*`` (new keywords allowed).
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_ORDER = (
    (f.ANSWERED, "\\Answered"),
    (f.FLAGGED, "\\Flagged"),
    (f.DELETED, "\\Deleted"),
    (f.SEEN, "\\Seen"),
    (f.DRAFT, "\\Draft"),
)
_STORED = f.SEEN | f.ANSWERED | f.FLAGGED | f.DELETED | f.DRAFT


def flag_names(mask: int, keywords: str | None, recent: bool) -> list[str]:
    """Flags in the order Dovecot sends them (system flags, \\Recent, then keywords)."""
    out = [name for bit, name in _ORDER if mask & bit]
    if recent:
        out.append("\\Recent")
    if keywords:
        out += keywords.split()
    return out


#: Rendered flag lists by (flag bits, keywords, recent): a handful of combinations
#: serve every message of a mailbox, so FETCH FLAGS of 1:* renders each once.
_FLAG_LISTS: dict[tuple[int, str | None, bool], bytes] = {}


@functools.cache
def _flag_table(bit: int, present: bool) -> bytes:
    """For bytes.translate over the low bytes of the flag words: 1 where ``bit`` is
    set (``present``) or clear, else 0."""
    return bytes(1 if bool(b & bit) == present else 0 for b in range(256))


@functools.lru_cache(maxsize=1024)
def flag_lines(keywords: tuple[str, ...], read_only: bool) -> tuple[bytes, bytes]:
    """FLAGS and PERMANENTFLAGS for a mailbox whose keywords are the sorted ``keywords``:
    rendered once per keyword set, not on every SELECT."""
    flags = [*SYSTEM_FLAGS, *keywords]
    return (
        r.flags_data(flags),
        r.untagged_status(
            "OK",
            "Flags permitted." if not read_only else "No permanent flags permitted.",
            r.code_permanentflags([] if read_only else flags, new_keywords=not read_only),
        ),
    )


def _low_bytes(flags: Column) -> bytes:
    # The arrays are native uint32; the low byte is every 4th byte from the start on
    # little-endian machines (all we run on), from offset 3 on big-endian ones.
    data = flags.tobytes()
    return data[::4] if array("I", [1]).tobytes()[0] == 1 else data[3::4]


_EMPTY = FolderListing(Columns(), {})  # only read (copied) by MailboxView.__init__


class MailboxView:
    """One session's view of its selected folder."""

    def __init__(
        self,
        folder: str,
        listing: FolderListing,
        *,
        uidvalidity: int,
        uidnext: int,
        modseq: int,
        read_only: bool,
    ) -> None:
        self.folder = folder
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.modseq = modseq
        self.read_only = read_only
        cols = listing.columns
        # Arrays of the view's own, or (from_snapshot) read-only views of a shared
        # snapshot's columns until the first change copies them (_own).
        self.uids: Column = array("I", cols.uids)
        self.flags: Column = array("I", cols.flags)
        self.sizes: Column = array("I", cols.sizes)
        self.dates: Column = array("q", cols.dates)
        self.keywords: dict[int, str] = dict(listing.keywords)
        self.recent: set[int] = set()
        self.pending_expunge: set[int] = set()
        #: The store's change count (``MailboxDatabase.change_count``) read before the view
        #: was last brought up to date; while the store's is the same, nothing is new.
        self.change_count = -1
        # Keywords announced in FLAGS; a new one is announced again before it is used.
        self.known_keywords: set[str] = set()
        for text in self.keywords.values():
            self.known_keywords.update(text.split())

    @classmethod
    def from_snapshot(cls, folder: str, snap: FolderSnapshot, *, read_only: bool) -> MailboxView:
        """A view of a shared snapshot. Its columns are copied at the view's first change,
        not here: a SELECT that only reads (or is followed by another SELECT) copies
        nothing."""
        view = cls(
            folder,
            _EMPTY,
            uidvalidity=snap.uidvalidity,
            uidnext=snap.uidnext,
            modseq=snap.highestmodseq,
            read_only=read_only,
        )
        view.uids, view.flags, view.sizes, view.dates = snap.column_views()
        view.keywords = dict(snap.keywords)
        view.known_keywords = set(snap.keyword_names)
        return view

    def _own(self) -> tuple[array[int], array[int], array[int], array[int]]:
        """The columns as arrays of the view's own, to change: a shared snapshot's (all
        four, see from_snapshot) are copied first; the snapshot is every session's."""
        if isinstance(self.uids, memoryview):
            copies = []
            columns = (self.uids, self.flags, self.sizes, self.dates)
            for code, column in zip("IIIq", columns, strict=True):
                assert isinstance(column, memoryview)
                owned = array(code)
                owned.frombytes(column.obj)  # the snapshot's bytes
                copies.append(owned)
            self.uids, self.flags, self.sizes, self.dates = copies
            return copies[0], copies[1], copies[2], copies[3]
        assert isinstance(self.flags, array) and isinstance(self.sizes, array)
        assert isinstance(self.dates, array)
        return self.uids, self.flags, self.sizes, self.dates

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def exists(self) -> int:
        return len(self.uids)

    def recent_in_store(self) -> list[int]:
        """UIDs whose stored \\Recent bit is still set (nobody claimed them yet)."""
        return list(compress(self.uids, self.with_flag(f.RECENT)))

    def with_flag(self, bit: int, present: bool = True) -> bytes:
        """Per message, 1 if it has (``present``) or lacks system flag ``bit``, else 0:
        one C-level pass for SEARCH UNSEEN, DELETED and the like."""
        return _low_bytes(self.flags).translate(_flag_table(bit, present))

    def first_unseen(self) -> int | None:
        """The sequence number of the first message without \\Seen."""
        i = self.with_flag(f.SEEN, present=False).find(1)
        return None if i < 0 else i + 1

    def seq_of(self, uid: int) -> int | None:
        uids = self.uids
        n = len(uids)
        if n:
            # Where the UID is when no message above it was expunged (the usual case: one
            # look instead of a bisection of Python ints).
            i = n - 1 - (uids[n - 1] - uid)
            if 0 <= i < n and uids[i] == uid:
                return i + 1
        i = bisect.bisect_left(uids, uid)
        return i + 1 if i < n and uids[i] == uid else None

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    def flag_list(self, seq: int) -> list[str]:
        uid = self.uids[seq - 1]
        return flag_names(self.flags[seq - 1], self.keywords.get(uid), uid in self.recent)

    def flag_bytes(self, seq: int) -> bytes:
        """The message's flags as a rendered IMAP list, ``(\\Seen $Junk)``."""
        i = seq - 1
        uid = self.uids[i]
        key = (self.flags[i], self.keywords.get(uid), uid in self.recent)
        data = _FLAG_LISTS.get(key)
        if data is None:
            if len(_FLAG_LISTS) >= 4096:  # keyword combinations are unbounded
                _FLAG_LISTS.clear()
            data = _FLAG_LISTS[key] = r.flag_list(flag_names(*key))
        return data

    def mask_at(self, seq: int) -> int:
        return self.flags[seq - 1] & _STORED

    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seqs_for_uids(self, uid_ranges: list[tuple[int, int]]) -> Iterator[int]:
        """Sequence numbers of the messages whose UIDs fall in the sorted inclusive ranges."""
        uids = self.uids
        for a, b in uid_ranges:
            lo = bisect.bisect_left(uids, a)
            hi = bisect.bisect_right(uids, b)
            yield from range(lo + 1, hi + 1)

    def mailbox_flags(self) -> list[str]:
        return [*SYSTEM_FLAGS, *sorted(self.known_keywords)]

    def flags_announcement(self) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS: at SELECT, and again after a new keyword came into use."""
        return list(flag_lines(tuple(sorted(self.known_keywords)), self.read_only))

    # ------------------------------------------------------------------ updates

    def set_flags(self, uid: int, mask: int, keywords: str | None) -> int | None:
        """Record flags this session itself stored or set; the sequence number, if present."""
        seq = self.seq_of(uid)
        if seq is None:
            return None
        self._own()[1][seq - 1] = mask
        if keywords:
            self.keywords[uid] = keywords
        else:
            self.keywords.pop(uid, None)
        return seq

    def unchanged_by(self, seqs: Iterable[int], mask: int, keywords: frozenset[str],
                     mode: FlagMode) -> bool:
        """Whether storing ``mask`` and ``keywords`` (``mode``: ``set``, ``add`` or
        ``remove``, as the store takes them) on these messages would change none of them,
        as this view holds them."""
        flags, uids, held = self.flags, self.uids, self.keywords
        for seq in seqs:
            old = flags[seq - 1] & _STORED
            text = held.get(uids[seq - 1])
            kw = frozenset(text.split()) if text else frozenset()
            if mode == "add":
                same = old | mask == old and keywords <= kw
            elif mode == "remove":
                same = not old & mask and not keywords & kw
            else:
                same = old == mask and kw == keywords
            if not same:
                return False
        return True

    def new_keywords(self, keywords: Iterable[str]) -> bool:
        """Remember keywords; True when one of them was not announced in FLAGS yet."""
        fresh = set(keywords) - self.known_keywords
        self.known_keywords |= fresh
        return bool(fresh)

    def sync(
        self,
        changes: FolderChanges,
        listing: FolderListing | None,
        claimed_recent: Iterable[int],
        *,
        allow_expunge: bool,
    ) -> list[bytes]:
        """Apply the store's changes; the untagged responses that tell the client.

        ``listing`` is a fresh listing, needed only when ``changes`` has messages
        above our highest UID (their sizes and dates); ``claimed_recent`` are UIDs
        this session just claimed as \\Recent.
        """
        out: list[bytes] = []
        self.recent.update(claimed_recent)
        self.uidnext = max(self.uidnext, changes.uidnext)
        self.defer_expunge(changes.expunged)
        if allow_expunge and self.pending_expunge:
            out += self._apply_expunges()
        top = self.max_uid()
        flag_updates: list[int] = []
        with_keywords: list[str] = []  # the keywords of updated messages that have some
        had_new = False
        # Each other session's STORE comes through here for every session watching the
        # folder: the loop is written for that (one bisection at most, the columns owned
        # once, no call per message).
        pending, keywords, seq_of = self.pending_expunge, self.keywords, self.seq_of
        flag_column: Column | None = None
        for change in changes.changed:
            uid = change.uid
            if uid > top:
                had_new = True
                continue
            if uid in pending:
                continue
            seq = seq_of(uid)
            if seq is None:
                continue
            mask = change.flags & _STORED
            kw = change.keywords or None
            if flag_column is None:
                flag_column = self.flags
            if flag_column[seq - 1] & _STORED != mask or keywords.get(uid) != kw:
                if isinstance(flag_column, memoryview):
                    flag_column = self._own()[1]
                flag_column[seq - 1] = mask
                if kw:
                    keywords[uid] = kw
                    with_keywords.append(kw)
                else:
                    keywords.pop(uid, None)
                flag_updates.append(seq)
        if had_new and listing is not None:
            self._append_new(listing)
        if with_keywords and any(self.new_keywords(kw.split()) for kw in with_keywords):
            out += self.flags_announcement()
        if had_new:
            out.append(r.exists(len(self.uids)))
            out.append(r.recent(len(self.recent)))
        for seq in sorted(set(flag_updates)):
            out.append(r.fetch_line(seq, [b"FLAGS " + self.flag_bytes(seq)]))
        self.modseq = max(self.modseq, changes.highestmodseq)
        return out

    def _append_new(self, listing: FolderListing) -> None:
        uids, flag_words, sizes, dates = self._own()
        top = self.max_uid()
        cols = listing.columns
        start = bisect.bisect_right(cols.uids, top)
        for i in range(start, len(cols.uids)):
            uid = cols.uids[i]
            if uid in self.pending_expunge:
                continue
            uids.append(uid)
            flag_words.append(cols.flags[i] & _STORED)
            sizes.append(cols.sizes[i])
            dates.append(cols.dates[i])
            kw = listing.keywords.get(uid)
            if kw:
                self.keywords[uid] = kw
                self.known_keywords.update(kw.split())

    def defer_expunge(self, uids: Iterable[int]) -> None:
        """Remembers UIDs expunged meanwhile; reported when EXPUNGE responses are allowed."""
        for uid in uids:
            if self.seq_of(uid) is not None:
                self.pending_expunge.add(uid)

    def expunge_now(self, uids: Iterable[int]) -> list[bytes]:
        """EXPUNGE responses for UIDs this session expunged itself (always announceable)."""
        self.defer_expunge(uids)
        return self._apply_expunges()

    def _apply_expunges(self) -> list[bytes]:
        # Highest first: removing a message never renumbers the ones below it, so
        # each EXPUNGE names the number the client has at that moment.
        seqs = sorted((s for s in map(self.seq_of, self.pending_expunge) if s), reverse=True)
        self.pending_expunge.clear()
        columns = self._own() if seqs else ()
        recent_before = len(self.recent)
        out = []
        for seq in seqs:
            i = seq - 1
            uid = self.uids[i]
            for arr in columns:
                del arr[i]
            self.keywords.pop(uid, None)
            self.recent.discard(uid)
            out.append(r.expunge(seq))
        if len(self.recent) != recent_before:
            out.append(r.recent(len(self.recent)))
        return out
