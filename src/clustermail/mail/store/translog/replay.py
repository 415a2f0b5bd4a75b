"""Roll a database file forward with its transaction log.

Replay writes each logged commit's page images into the file, as a checkpoint would, in
log order. A record wholly at or before the file's state is skipped and a record that
overlaps it (it starts before and ends after) is applied whole — physical page images of
later commits overwrite older ones — so replaying any suffix of the log that starts at or
before the file's state yields the same file, and replaying twice changes nothing. Replay
stops, saying why, at a GAP it cannot cross, at a missing record, or at ``until``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clustermail.mail.store.translog import wal
from clustermail.mail.store.translog.errors import LogError
from clustermail.mail.store.translog.records import Kind, Record


@dataclass
class ReplayReport:
    start_txn: int | None
    txn: int | None  # the file's state after replay (None: still nothing)
    applied: int = 0  # records applied
    time: float | None = None  # commit time of the last applied record
    stopped: str | None = None  # why replay ended before the log did

    @property
    def changes(self) -> int:
        return (self.txn or 0) - (self.start_txn or 0)


def replay(
    path: Path,
    records: Iterable[Record],
    *,
    start_txn: int | None,
    db_id: bytes,
    until: float | None = None,
    sync: bool = True,
) -> ReplayReport:
    """Apply ``records`` to the database file ``path`` whose state is ``start_txn`` (None:
    there is no file yet; the log must begin with a BASE record). The file must not be in
    use and must have no ``-wal`` beside it."""
    if os.path.exists(wal.wal_path(path)) and os.path.getsize(wal.wal_path(path)) > 0:
        raise LogError(f"{path} has a WAL file beside it: replay needs the file alone")
    report = ReplayReport(start_txn, start_txn)
    txn = start_txn
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for r in records:
            if r.db_id != db_id:
                raise LogError(f"a record of database {r.db_id.hex()} in the log of "
                               f"{db_id.hex()}")
            if until is not None and r.time > until:
                report.stopped = f"reached the time limit (next change logged at {r.time:.3f})"
                break
            if r.kind is Kind.BASE:
                if txn is None:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, r.payload, 0)
                    txn = r.txn
                    report.applied += 1
                    report.time = r.time
                continue
            if txn is None:
                report.stopped = ("the log does not begin with the database's creation: "
                                  "a backup is needed to start from")
                break
            if r.kind is Kind.GAP:
                if r.txn > txn:
                    report.stopped = (f"the log has a gap: changes {txn + 1}..{r.txn} were "
                                      "never logged; a backup taken after it is needed to go "
                                      "further")
                    break
                continue  # the log (re)starts at or before the file's state
            if r.txn < txn or (r.txn == txn and r.prev_txn < txn):
                continue  # already in the file (a record at txn..txn holds uncounted commits
                # of another program after change txn: applied, harmlessly if already in)
            if r.prev_txn > txn:
                report.stopped = (f"the log lacks changes {txn + 1}..{r.prev_txn} (it was "
                                  "truncated, or the backup is older than the log)")
                break
            try:
                wal.apply_frames(fd, r.payload, r.page_size)
            except (OSError, wal.WalFormatError) as exc:
                raise LogError(f"cannot apply change {r.txn} to {path}: {exc}") from None
            txn = r.txn
            report.applied += 1
            report.time = r.time
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    report.txn = txn
    return report
