"""The last flag changes of each folder, in memory, so that an IMAP session catching up
after other sessions' STOREs reads no change log from the database.

The writer records each committed ``set_flags`` (after its COMMIT, before anyone is
answered) under its modseq. A folder's entries always hold consecutive modseqs: a record
whose modseq does not follow the last one (another kind of write took the modseqs in
between: a delivery, an expunge, a copy) starts the folder's entries over. So when the
entries cover every modseq after a reader's up to the folder's HIGHESTMODSEQ, every
change since was a flag change recorded here, and :meth:`FlagLog.since` answers what
``messages.changes_since`` would; otherwise it answers None and the reader asks the
database. Entries are keyed by folder id and UIDVALIDITY (never reused in a database), so
a folder deleted and made again under the same id never matches old entries. The one
write that changes flags without a new modseq, a claim of \\Recent, is applied to the
entries too (:meth:`FlagLog.recent_claimed`, after its commit like a record).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from clustermail.mail.store.flags import RECENT
from clustermail.mail.store.types import FlagChange

#: Flag-change commits kept per folder: a session that is further behind reads the database.
KEEP = 256


class FlagLog:
    def __init__(self, keep: int = KEEP) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        #: (folder id, uidvalidity) -> (modseq, changes) for consecutive modseqs
        self._folders: dict[tuple[int, int], deque[tuple[int, Sequence[FlagChange]]]] = {}
        self.answered = 0  # calls of since() answered from memory

    def record(
        self, folder_id: int, uidvalidity: int, modseq: int, changes: Sequence[FlagChange]
    ) -> None:
        """A committed flag change of the folder under ``modseq`` (writer thread)."""
        key = (folder_id, uidvalidity)
        with self._lock:
            entries = self._folders.get(key)
            if entries is None:
                entries = self._folders[key] = deque(maxlen=self._keep)
            elif entries and entries[-1][0] != modseq - 1:
                entries.clear()  # modseqs in between went to other writes
            entries.append((modseq, changes))

    def recent_claimed(self, folder_id: int, uidvalidity: int, uids: Sequence[int]) -> None:
        """A committed claim cleared \\Recent of ``uids``: as in the message table."""
        claimed = set(uids)
        with self._lock:
            entries = self._folders.get((folder_id, uidvalidity))
            if not entries or not claimed:
                return
            for i, (modseq, changes) in enumerate(entries):
                if any(c.uid in claimed and c.flags & RECENT for c in changes):
                    entries[i] = (modseq, [
                        FlagChange(c.uid, c.flags & ~RECENT, c.keywords, c.modseq)
                        if c.uid in claimed else c
                        for c in changes
                    ])

    def since(
        self, folder_id: int, uidvalidity: int, modseq: int, highestmodseq: int
    ) -> list[FlagChange] | None:
        """The messages changed after ``modseq`` up to ``highestmodseq`` (the folder's, read
        by the caller), the latest change of each, in UID order, when every modseq in
        between is a recorded flag change; None when the database must be asked."""
        if highestmodseq <= modseq:
            return []
        with self._lock:
            entries = self._folders.get((folder_id, uidvalidity))
            if not entries or entries[0][0] > modseq + 1 or entries[-1][0] < highestmodseq:
                return None
            latest: dict[int, FlagChange] = {}
            # newest first: stop once past the reader's modseq
            for seq, changes in reversed(entries):
                if seq > highestmodseq:
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
