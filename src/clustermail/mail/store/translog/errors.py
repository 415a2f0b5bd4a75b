"""Errors of the transaction log and of the storage group's own record of its databases."""

from __future__ import annotations

from pathlib import Path

from clustermail.mail.store.errors import StoreError


class LogError(StoreError):
    """The transaction log cannot be read or written (the database stops taking writes:
    a change that cannot be logged is not acknowledged)."""


class DatabaseLostError(StoreError):
    """A database that the storage group records as existing is missing or is another
    file: it is not re-created empty; it is restored, or reset explicitly."""

    def __init__(self, storage_group: str, database: str, path: Path, problem: str,
                 expected: str, *, whole_store: bool = False) -> None:
        self.whole_store = whole_store  # the disk's own records are gone too
        self.storage_group = storage_group
        self.database = database
        self.path = path
        self.problem = problem
        self.expected = expected
        super().__init__(self.describe(None))

    def describe(self, virtual_server: str | None) -> str:
        vs = virtual_server or "<virtual server>"
        where = f"{self.storage_group}/{self.database}"
        whose = "the cluster's records expect" if self.whole_store else (
            "the storage group's records expect")
        rebuild = (f"; if the whole disk was lost, rebuild every database and the relay "
                   f"queue instead: clustermail vs offline {vs}, then clustermail restore "
                   f"{vs} --all --from <backup id>" if self.whole_store else "")
        return (
            f"database {where} not mounted: {self.path} {self.problem}; {whose} "
            f"{self.expected}. Restore it: clustermail restore {vs} {where} "
            f"--from <backup id> (see `clustermail backup list`){rebuild}; or replace it "
            f"with a new empty database: clustermail store reset {vs} {where} --confirm"
        )


class DatabaseBehindLogError(LogError):
    """The file is older than its log (its last commits were not yet in it when the machine
    went down, or an older copy was put in its place): the mount rolls it forward."""

    def __init__(self, path: Path, db_id: bytes, txn: int, logged: int) -> None:
        super().__init__(f"{path} is at change {txn} but its log holds changes up to {logged}")
        self.path = path
        self.db_id = db_id
        self.txn = txn
        self.logged = logged
