"""A stand-in ``test_mail_store`` resource type for resource-host tests of smtp/pop3,
until the real ``mail_store`` (clustermail.mail.store.resource) is on main: it mounts the
virtual server's MailStore on its disk and serves a directory read from a JSON file
(property ``directory``: {"domains": [...], "mailboxes": {address: [server, password]}})."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from clustermail.cluster.resources import Properties, Resource, ResourceContext, register
from clustermail.cluster.resources.disk import DiskResource
from clustermail.mail.contracts import Directory, MailboxEntry
from clustermail.mail.store import MailboxDatabase, MailStore
from tests.mail_smtp.fakes import FakeDirectory


def load_directory(path: Path) -> FakeDirectory:
    data = json.loads(path.read_text())
    d = FakeDirectory(domains=set(data["domains"]))
    for address, (server, password) in data["mailboxes"].items():
        d.add(address, server=server, password=password)
    return d


class TestMailStore(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.directory_file = Path(properties.string("directory"))
        self._store: MailStore | None = None
        self._directory: FakeDirectory | None = None

    @property
    def store(self) -> MailStore:
        assert self._store is not None
        return self._store

    @property
    def directory(self) -> Directory:
        assert self._directory is not None
        return self._directory

    def database_for(self, entry: MailboxEntry) -> MailboxDatabase:
        return self.store.database(entry.storage_group, entry.database)

    async def online(self) -> None:
        disk = self.ctx.dependency(DiskResource).path
        self._directory = load_directory(self.directory_file)

        def mount() -> MailStore:
            store = MailStore(disk)
            store.mount(self.ctx.epoch)
            for entry in self._directory.entries.values() if self._directory else ():
                if entry.server == self.ctx.vs:
                    db = store.database(entry.storage_group, entry.database)
                    if not db.has_mailbox(entry.address):
                        db.create_mailbox_sync(entry.address)
            return store

        self._store = await asyncio.to_thread(mount)

    async def offline(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await asyncio.to_thread(store.dismount)

    async def quick_check(self) -> bool:
        return self._store is not None

    async def thorough_check(self) -> bool:
        return self._store is not None


register("test_mail_store", TestMailStore)
