"""The cluster's record of each mailbox database a virtual server created.

``/clustermail-databases/<vs>/<storage group>/<database>`` holds the database's id (the one
stored in its file and in its storage group's manifest), when and by whom it was first
mounted; the cluster backup holds these records with the directory. The
disk keeps its own record beside the logs; this one lives in the coordination store, so a
virtual server that comes up on an entirely empty disk (files, logs and manifest lost)
still knows which databases existed and refuses to create them again empty. A database
with no record is new and is created. ``store reset`` drops the record (the next mount
creates a new database and records it); a restore or a mount of another file records that
file's id. Reads go to the store, never the cache: a mount decides on the current record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from clustermail.mail import keys
from clustermail.mail.directory import model as m
from clustermail.mail.directory.access import DirectoryAccess


@dataclass(frozen=True, slots=True)
class DatabaseRecord:
    server: str
    storage_group: str
    database: str
    id: str  # hex, as in the file's meta table
    created: float  # when this id was first recorded
    node: str = ""  # who recorded it
    epoch: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes) -> DatabaseRecord:
        d = json.loads(raw)
        epoch = d.get("epoch")
        return cls(str(d["server"]), str(d["storage_group"]), str(d["database"]),
                   str(d["id"]), float(d["created"]), str(d.get("node", "")),
                   None if epoch is None else int(epoch))


def _key(server: str, storage_group: str, database: str) -> str:
    return f"{keys.DATABASES}{m.check_server_name(server)}/{storage_group}/{database}"


class DatabaseRecords(DirectoryAccess):
    async def database_records(self, server: str) -> dict[tuple[str, str], DatabaseRecord]:
        """The databases ``server`` created, by (storage group, database); records that
        cannot be read are left out (a mount then treats that database as new)."""
        prefix = f"{keys.DATABASES}{m.check_server_name(server)}/"
        out: dict[tuple[str, str], DatabaseRecord] = {}
        for kv in (await self.store.range(prefix)).kvs:
            try:
                record = DatabaseRecord.from_json(kv.value)
            except (ValueError, KeyError, TypeError):
                continue
            out[(record.storage_group, record.database)] = record
        return out

    async def record_database(self, record: DatabaseRecord) -> None:
        """Written by the owner (the only writer of its virtual server's records)."""
        await self.store.put(_key(record.server, record.storage_group, record.database),
                             record.to_json())

    async def forget_database(self, server: str, storage_group: str, database: str) -> None:
        """A reset: the next mount creates the database new and records it."""
        await self.store.delete(_key(server, storage_group, database))


__all__ = ["DatabaseRecord", "DatabaseRecords"]
