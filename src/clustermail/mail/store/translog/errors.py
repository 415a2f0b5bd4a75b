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
                 expected: str) -> None:
        self.storage_group = storage_group
        self.database = database
        self.path = path
        self.problem = problem
        self.expected = expected
        super().__init__(self.describe(None))

    def describe(self, virtual_server: str | None) -> str:
        vs = virtual_server or "<virtual server>"
        where = f"{self.storage_group}/{self.database}"
        return (
            f"database {where} not mounted: {self.path} {self.problem}; the storage group's "
            f"records expect {self.expected}. Restore it: clustermail restore {vs} {where} "
            f"--from <backup id> (see `clustermail backup list`), or replace it with a new "
            f"empty database: clustermail store reset {vs} {where} --confirm"
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
