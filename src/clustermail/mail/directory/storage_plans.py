"""Storage plans: the storage groups and databases each virtual server's ``mail_store``
creates on its disk, and the status record it publishes once it applied them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from clustermail.coord import Compare, Put
from clustermail.mail.directory import model as m
from clustermail.mail.directory.access import CAS_ATTEMPTS, DirectoryAccess
from clustermail.mail.directory.model import ConflictError, InvalidRequestError
from clustermail.mail.store.errors import LayoutError
from clustermail.mail.store.layout import Layout, default_layout


class StoragePlans(DirectoryAccess):
    async def storage_layout(self, server: str) -> Layout:
        """The storage groups and databases planned for a virtual server (SG1/DB1 until an
        administrator adds more). Its mail_store resource creates them on its disk."""
        raw = await self._get(m.STORAGE, m.check_server_name(server))
        if raw is None:
            return default_layout()
        return Layout.from_json(raw.decode(), f"storage plan of {server}")

    async def add_storage_group(self, server: str, name: str) -> Layout:
        return await self._change_layout(server, lambda layout: layout.with_storage_group(name))

    async def add_database(self, server: str, storage_group: str, name: str) -> Layout:
        return await self._change_layout(
            server, lambda layout: layout.with_database(storage_group, name)
        )

    async def _change_layout(self, server: str, change: Callable[[Layout], Layout]) -> Layout:
        key = self._key(m.STORAGE, m.check_server_name(server))
        for _ in range(CAS_ATTEMPTS):
            kv = await self.store.get(key)
            current = (
                default_layout()
                if kv is None
                else Layout.from_json(kv.value.decode(), f"storage plan of {server}")
            )
            try:
                new = change(current)
            except LayoutError as exc:
                raise InvalidRequestError(f"{server}: {exc}") from None
            guard = Compare.absent(key) if kv is None else Compare.mod_is(key, kv.mod_revision)
            if (await self.store.txn([guard], [Put(key, new.to_json())])).succeeded:
                return new
        raise ConflictError(f"the storage plan of {server} kept changing; try again")

    async def check_database(self, server: str, storage_group: str, database: str) -> None:
        """InvalidRequestError unless the database is in the storage plan of ``server``."""
        layout = await self.storage_layout(server)
        try:
            dbs = layout.group(storage_group).databases
        except LayoutError:
            dbs = ()
        if database not in dbs:
            have = ", ".join(f"{g.name}/{d}" for g in layout.storage_groups for d in g.databases)
            raise InvalidRequestError(
                f"virtual server {server} has no database {storage_group}/{database} "
                f"(it has: {have or 'none'}); add it with `clustermail store add-database`"
            )

    async def publish_provisioned(self, server: str, record: dict[str, Any]) -> None:
        """Status of a virtual server's mail_store: which directory revision it applied."""
        await self.store.put(self._key(m.PROVISIONED, server), json.dumps(record, sort_keys=True))
