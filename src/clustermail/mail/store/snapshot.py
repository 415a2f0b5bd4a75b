"""Shared, immutable snapshots of a folder's listing, for IMAP SELECT.

Every session that selects a folder needs its whole listing (UIDs, flags, sizes, dates,
keywords). Decoding it from the folder index costs milliseconds at 10 000 messages; a
snapshot is decoded once per database and then kept current from the change log
(``messages.changes_since`` and the index entries above its highest UID), so a SELECT
of an unchanged folder reads only the folder row.

Snapshots are never mutated once published: their columns are ``bytes``, and a session
copies them into arrays of its own (:meth:`FolderSnapshot.columns`), so nothing one
session does to its view can reach another session or the cache.

Validity: a snapshot names the folder id, UIDVALIDITY, HIGHESTMODSEQ and UIDNEXT it was
read at. Every write that changes a listing column (insert, STORE, expunge) raises the
folder's HIGHESTMODSEQ and logs the change under it, except clearing \\Recent: claims
are reported to the cache (:meth:`SnapshotCache.recent_claimed`), which keeps ``recent``,
the UIDs still marked \\Recent, exact. The flag words may still carry a claimed \\Recent
bit; readers of the listing look at ``recent`` instead.
"""

from __future__ import annotations

import copy
import sqlite3
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from itertools import compress

from clustermail.mail.store import flags, index, messages
from clustermail.mail.store.folders import FolderRow
from clustermail.mail.store.index import Columns, FolderListing

#: Above this share of changed messages a snapshot is loaded again rather than patched.
_PATCH_LIMIT = 0.125


class FolderSnapshot:
    """One folder's listing at one HIGHESTMODSEQ; immutable."""

    __slots__ = (
        "_data",
        "first_unseen",
        "folder_id",
        "highestmodseq",
        "keyword_names",
        "keywords",
        "recent",
        "recent_exact",
        "uidnext",
        "uidvalidity",
    )

    def __init__(
        self, row: FolderRow, columns: Columns, keywords: dict[int, str], recent: frozenset[int]
    ) -> None:
        self.folder_id = row.id
        self.uidvalidity = row.uidvalidity
        self.uidnext = row.uidnext
        self.highestmodseq = row.highestmodseq
        self._data = tuple(
            a.tobytes()
            for a in (columns.uids, columns.flags, columns.sizes, columns.modseqs, columns.dates)
        )
        self.keywords: dict[int, str] = keywords  # read-only by convention; callers copy
        self.recent = recent
        #: False when a claim ran while this snapshot was read: ``recent`` may then hold
        #: claimed UIDs, and the store must be asked (such a snapshot is not cached).
        self.recent_exact = True
        names: set[str] = set()
        for text in keywords.values():
            names.update(text.split())
        self.keyword_names = frozenset(names)
        unseen = _low_bytes(columns.flags).translate(_UNSEEN).find(1)
        self.first_unseen = None if unseen < 0 else unseen + 1  # sequence number

    def __len__(self) -> int:
        return len(self._data[0]) // 4

    def columns(self) -> Columns:
        """Fresh arrays (a copy) of the listing columns, for the caller to own."""
        cols = Columns()
        for arr, data in zip(
            (cols.uids, cols.flags, cols.sizes, cols.modseqs, cols.dates), self._data, strict=True
        ):
            arr.frombytes(data)
        return cols

    def column_views(self) -> tuple[memoryview, memoryview, memoryview, memoryview]:
        """UIDs, flags, sizes and dates as read-only typed views of the snapshot's own
        bytes: no copy, for a reader that copies only once it changes something."""
        uids, flag_words, sizes, _, dates = self._data
        return (
            memoryview(uids).cast("I"),
            memoryview(flag_words).cast("I"),
            memoryview(sizes).cast("I"),
            memoryview(dates).cast("q"),
        )

    def listing(self) -> FolderListing:
        """A private :class:`FolderListing` copy."""
        return FolderListing(self.columns(), dict(self.keywords))

    def with_recent(self, recent: frozenset[int], *, exact: bool = True) -> FolderSnapshot:
        """The same snapshot with another \\Recent set."""
        snap = copy.copy(self)
        snap.recent = recent
        snap.recent_exact = exact
        return snap

    def matches(self, row: FolderRow) -> bool:
        return (
            row.id == self.folder_id
            and row.uidvalidity == self.uidvalidity
            and row.highestmodseq == self.highestmodseq
            and row.uidnext == self.uidnext
        )


_UNSEEN = bytes(0 if b & flags.SEEN else 1 for b in range(256))


def _low_bytes(values: array[int]) -> bytes:
    data = values.tobytes()
    return data[::4] if array("I", [1]).tobytes()[0] == 1 else data[3::4]


def _recent_of(columns: Columns) -> frozenset[int]:
    bits = _low_bytes(columns.flags).translate(_RECENT)
    return frozenset(compress(columns.uids, bits)) if bits.find(1) >= 0 else frozenset()


_RECENT = bytes(1 if b & flags.RECENT else 0 for b in range(256))


def load(conn: sqlite3.Connection, row: FolderRow) -> FolderSnapshot:
    listing = index.load(conn, row.id)
    cols = listing.columns
    return FolderSnapshot(row, cols, listing.keywords, _recent_of(cols))


def refresh(conn: sqlite3.Connection, row: FolderRow, old: FolderSnapshot) -> FolderSnapshot:
    """``old`` brought to ``row``'s HIGHESTMODSEQ from the change log (same folder and
    UIDVALIDITY), or loaded whole when most of it changed."""
    changes = messages.changes_since(conn, row, old.highestmodseq)
    size = len(old)
    if len(changes.changed) + len(changes.expunged) > max(64, size * _PATCH_LIMIT):
        return load(conn, row)
    cols = old.columns()
    keywords = dict(old.keywords)
    recent = set(old.recent)
    top = cols.uids[-1] if size else 0
    gone = [p for p in map(cols.position, changes.expunged) if p is not None]
    if gone:
        cols.delete(gone)
        for uid in changes.expunged:
            keywords.pop(uid, None)
            recent.discard(uid)
    for change in changes.changed:
        if change.uid > top:
            continue  # new: taken from the index below, sizes and dates included
        pos = cols.position(change.uid)
        if pos is None:
            continue
        cols.flags[pos] = change.flags
        cols.modseqs[pos] = change.modseq
        _set_keywords(keywords, change.uid, change.keywords)
        if change.flags & flags.RECENT:  # the store's word, read just now
            recent.add(change.uid)
        else:
            recent.discard(change.uid)
    new = index.load_after(conn, row.id, top)
    for i in range(len(new)):
        uid = new.uids[i]
        cols.append((uid, new.flags[i], new.sizes[i], new.modseqs[i], new.dates[i]))
        if new.flags[i] & flags.RECENT:
            recent.add(uid)
    for change in changes.changed:
        if change.uid > top:
            _set_keywords(keywords, change.uid, change.keywords)
    return FolderSnapshot(row, cols, keywords, frozenset(recent))


def _set_keywords(keywords: dict[int, str], uid: int, text: str | None) -> None:
    if text:
        keywords[uid] = text
    else:
        keywords.pop(uid, None)


class SnapshotCache:
    """The newest snapshot per folder of one database, least recently used dropped first
    once the snapshots hold more than ``max_messages`` messages in all."""

    def __init__(self, max_messages: int = 1_000_000) -> None:
        self._max = max_messages
        self._lock = threading.Lock()
        self._snapshots: OrderedDict[int, FolderSnapshot] = OrderedDict()
        self._held = 0
        self._claims = 0  # \\Recent claims reported so far

    @property
    def claims(self) -> int:
        """Read before the transaction a snapshot is built in (see :meth:`get`)."""
        return self._claims

    def cached(self, row: FolderRow) -> FolderSnapshot | None:
        """The cached snapshot if it is still current for ``row`` (no read needed)."""
        with self._lock:
            old = self._snapshots.get(row.id)
            if old is None or not old.matches(row):
                return None
            self._snapshots.move_to_end(row.id)
            return old

    def get(self, conn: sqlite3.Connection, row: FolderRow, claims: int) -> FolderSnapshot:
        """The snapshot for ``row``, read in the caller's transaction, which began after
        ``claims`` was read from :attr:`claims`."""
        with self._lock:
            old = self._snapshots.get(row.id)
            if old is not None:
                self._snapshots.move_to_end(row.id)
        if old is not None and old.matches(row):
            return old
        if (
            old is not None
            and old.folder_id == row.id
            and old.uidvalidity == row.uidvalidity
            and old.highestmodseq < row.highestmodseq
        ):
            snap = refresh(conn, row, old)
        else:
            snap = load(conn, row)
        return self._put(snap, claims)

    def _put(self, snap: FolderSnapshot, claims: int) -> FolderSnapshot:
        with self._lock:
            if claims != self._claims:  # a claim raced the read: \\Recent may be stale
                return snap.with_recent(snap.recent, exact=False)
            old = self._snapshots.get(snap.folder_id)
            if old is not None:
                if old.uidvalidity == snap.uidvalidity and old.highestmodseq > snap.highestmodseq:
                    return snap  # a newer one was published meanwhile
                self._held -= len(old)
            self._snapshots[snap.folder_id] = snap
            self._held += len(snap)
            while self._held > self._max and len(self._snapshots) > 1:
                _, dropped = self._snapshots.popitem(last=False)
                self._held -= len(dropped)
        return snap

    def recent_claimed(self, folder_id: int, uids: Iterable[int]) -> None:
        """\\Recent was cleared on ``uids`` (which never get it back: UIDs are not reused)."""
        claimed = frozenset(uids)
        with self._lock:
            self._claims += 1
            old = self._snapshots.get(folder_id)
            if old is None or not old.recent & claimed:
                return
            self._snapshots[folder_id] = old.with_recent(old.recent - claimed)

    def clear(self) -> None:
        """Forget every snapshot; one being read meanwhile is not cached either."""
        with self._lock:
            self._snapshots.clear()
            self._held = 0
            self._claims += 1
