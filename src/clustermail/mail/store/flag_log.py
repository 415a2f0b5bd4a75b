"""The last flag changes of each folder, in memory, so that an IMAP session catching up
after other sessions' STOREs reads no change log from the database.

The writer records each committed ``set_flags`` (after its COMMIT, before anyone is
answered) under its modseq. A folder's entries always hold consecutive modseqs: a record
whose modseq does not follow the last one (another kind of write took the modseqs in
between: a delivery, an expunge, a copy) starts the folder's entries over. So when the
entries cover every modseq after a reader's up to the folder's HIGHESTMODSEQ, every
change since was a flag change recorded here, and :meth:`FlagLog.since` answers what
``messages.changes_since`` would; otherwise it answers None and the reader asks the
database. Entries are keyed by UIDVALIDITY (never reused in a database) and carry the
folder id, so a folder deleted and made again under the same id never matches old entries.

A reader that knows every commit since its last look was a flag change (the database
counts commits of other kinds, see ``MailboxDatabase.flag_changes_since``) need not even
read the folder row: the folder's HIGHESTMODSEQ is then its last recorded modseq
(:meth:`FlagLog.latest`).

The one write that changes flags without a new modseq, a claim of \\Recent, is applied
to the entries too (:meth:`FlagLog.recent_claimed`, after its commit like a record).
Memory is bounded (:data:`KEEP` commits per folder, :data:`FOLDERS` folders, and
:data:`CHANGES` changed messages in all: a client setting the flags of whole large
folders again and again must not grow it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from clustermail.mail.store.flags import RECENT
from clustermail.mail.store.types import FlagChange

#: Flag-change commits kept per folder: a session that is further behind reads the database.
KEEP = 128
#: Folders kept, those with the latest flag changes.
FOLDERS = 1024
#: Changed messages kept in all folders (~150 bytes each: ~10 MB at most). A commit that
#: changed more than a sixteenth of this (a STORE of a whole large folder) is not kept.
CHANGES = 65_536


def _nothing() -> None:
    pass


class _Entries:
    __slots__ = ("count", "folder_id", "items")

    def __init__(self, folder_id: int) -> None:
        self.folder_id = folder_id
        #: (modseq, changes) for consecutive modseqs
        self.items: deque[tuple[int, Sequence[FlagChange]]] = deque()
        self.count = 0  # changes in items


class FlagLog:
    """``on_forget`` is called (in the writer thread, inside a commit's hooks) when a
    folder's entries are dropped to make room: :meth:`latest` would then take the folder
    for unchanged, so its caller must stop relying on it (see the database)."""

    def __init__(
        self,
        keep: int = KEEP,
        folders: int = FOLDERS,
        on_forget: Callable[[], None] = _nothing,
        changes: int = CHANGES,
    ) -> None:
        self._keep = keep
        self._max_folders = folders
        self._max_changes = changes
        self._total = 0  # changes kept in all folders
        self._on_forget = on_forget
        self._lock = threading.Lock()
        self._folders: OrderedDict[int, _Entries] = OrderedDict()  # by UIDVALIDITY, LRU
        self.answered = 0  # questions answered from memory

    def record(
        self, folder_id: int, uidvalidity: int, modseq: int, changes: Sequence[FlagChange]
    ) -> None:
        """A committed flag change of the folder under ``modseq`` (writer thread)."""
        with self._lock:
            entries = self._folders.get(uidvalidity)
            if len(changes) > self._max_changes // 16:
                # Too large to keep: the folder's readers ask the database from now on
                # (forgetting it tells those who rely on :meth:`latest`).
                if entries is not None:
                    self._forget(uidvalidity)
                self._on_forget()
                return
            if entries is None or entries.folder_id != folder_id:
                if entries is not None:
                    self._forget(uidvalidity)
                entries = self._folders[uidvalidity] = _Entries(folder_id)
            elif entries.items and entries.items[-1][0] != modseq - 1:
                self._total -= entries.count  # modseqs in between went to other writes
                entries.items.clear()
                entries.count = 0
            self._folders.move_to_end(uidvalidity)
            entries.items.append((modseq, changes))
            entries.count += len(changes)
            self._total += len(changes)
            # Its oldest commits go first (a reader further behind asks the database): at
            # most KEEP of them, and at most half of all the changes kept.
            while len(entries.items) > self._keep or entries.count > self._max_changes // 2:
                _, dropped = entries.items.popleft()
                entries.count -= len(dropped)
                self._total -= len(dropped)
            while len(self._folders) > self._max_folders or self._total > self._max_changes:
                self._forget(next(iter(self._folders)))  # the least recently changed
                self._on_forget()

    def _forget(self, uidvalidity: int) -> None:
        self._total -= self._folders.pop(uidvalidity).count

    def recent_claimed(self, folder_id: int, uidvalidity: int, uids: Sequence[int]) -> None:
        """A committed claim cleared \\Recent of ``uids``: as in the message table."""
        claimed = set(uids)
        with self._lock:
            entries = self._folders.get(uidvalidity)
            if entries is None or entries.folder_id != folder_id or not claimed:
                return
            items = entries.items
            for i, (modseq, changes) in enumerate(items):
                if any(c.uid in claimed and c.flags & RECENT for c in changes):
                    cleared = [
                        FlagChange(c.uid, c.flags & ~RECENT, c.keywords, c.modseq)
                        if c.uid in claimed
                        else c
                        for c in changes
                    ]
                    items[i] = (modseq, cleared)

    def since(
        self, folder_id: int, uidvalidity: int, modseq: int, highestmodseq: int
    ) -> list[FlagChange] | None:
        """The messages changed after ``modseq`` up to ``highestmodseq`` (the folder's, read
        by the caller), the latest change of each, in UID order, when every modseq in
        between is a recorded flag change; None when the database must be asked."""
        if highestmodseq <= modseq:
            return []
        with self._lock:
            entries = self._folders.get(uidvalidity)
            if entries is None or entries.folder_id != folder_id:
                return None
            return self._collect(entries.items, modseq, highestmodseq)

    def latest(self, uidvalidity: int, modseq: int) -> tuple[int, list[FlagChange]] | None:
        """(HIGHESTMODSEQ, changes after ``modseq``) of the folder, for a caller that knows
        every commit since it last read the folder was a flag change recorded here (then
        the folder's modseqs after ``modseq`` are all here); None when some fell out of
        memory."""
        with self._lock:
            entries = self._folders.get(uidvalidity)
            if entries is None or not entries.items or entries.items[-1][0] <= modseq:
                self.answered += 1
                return modseq, []  # nothing recorded since: the folder did not change
            highest = entries.items[-1][0]
            changed = self._collect(entries.items, modseq, highest)
        return None if changed is None else (highest, changed)

    def _collect(
        self, items: deque[tuple[int, Sequence[FlagChange]]], modseq: int, highest: int
    ) -> list[FlagChange] | None:
        if not items or items[0][0] > modseq + 1 or items[-1][0] < highest:
            return None
        latest: dict[int, FlagChange] = {}
        # newest first: stop once past the reader's modseq
        for seq, changes in reversed(items):
            if seq > highest:
                continue  # committed after the caller read the folder row
            if seq <= modseq:
                break
            for change in changes:
                latest.setdefault(change.uid, change)
        self.answered += 1
        return [latest[uid] for uid in sorted(latest)]

    def clear(self) -> None:
        with self._lock:
            self._folders.clear()
            self._total = 0
