"""Disconnected mailboxes, as in Exchange: a mailbox whose address was removed keeps its
data in its database, listed under ``disconnected/<mailbox id>``, until an administrator
reconnects it to an address (`user reconnect`) or purges it (`user purge`).

A mailbox id is attached to at most one address at any time, or recorded here, or
neither (purged; or found by its mail store without a record, which then records it):
removing an address records its mailbox in the same transaction, and reconnecting
deletes the record in the transaction that attaches the id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

from clustermail.coord import Compare, Delete, Put
from clustermail.mail.directory import model as m
from clustermail.mail.directory.access import CAS_ATTEMPTS, DirectoryAccess
from clustermail.mail.directory.addresses import parse_address
from clustermail.mail.directory.model import (
    ConflictError,
    DisconnectedEntry,
    InUseError,
    InvalidRequestError,
    MailboxEntry,
    NotFoundError,
)


class DisconnectedMailboxes(DirectoryAccess):
    async def _attached_ids(self) -> set[str]:
        return {MailboxEntry.from_json(raw).mailbox_id for _, raw in await self._items(m.MAILBOXES)}

    async def list_disconnected(self, server: str | None = None) -> list[DisconnectedEntry]:
        """The disconnected mailboxes (of one virtual server), oldest first."""
        if server is not None:
            m.check_server_name(server)
        attached = await self._attached_ids()
        found = [DisconnectedEntry.from_json(raw) for _, raw in await self._items(m.DISCONNECTED)]
        return sorted(
            (d for d in found
             if d.mailbox_id not in attached and (server is None or d.server == server)),
            key=lambda d: (d.disconnected_at, d.mailbox_id),
        )

    async def disconnected_mailbox(self, mailbox_id: str) -> DisconnectedEntry:
        """The record of a disconnected mailbox; NotFoundError if there is none."""
        kv = await self.store.get(self._key(m.DISCONNECTED, m.check_mailbox_id(mailbox_id)))
        if kv is None:
            raise NotFoundError(_not_disconnected(mailbox_id))
        return DisconnectedEntry.from_json(kv.value)

    async def reconnect_mailbox(
        self, address: str, mailbox_id: str, *, password: str | None = None,
        display_name: str | None = None,
    ) -> tuple[MailboxEntry, DisconnectedEntry | None]:
        """Attaches disconnected mailbox ``mailbox_id`` to ``address``, in one transaction.

        If ``address`` is a mailbox, it keeps its password, aliases, groups and quota
        and gets this mailbox's data instead of its own, which is disconnected in its
        place (returned second). Otherwise a mailbox entry is created for the address,
        which needs ``password``; the display name defaults to the mailbox's last one."""
        m.check_mailbox_id(mailbox_id)
        addr = parse_address(address)
        if display_name is not None:
            m.check_display_name(display_name)
        password_hash = None
        if password is not None:
            password_hash = await self.passwords.hash(m.check_password(password))
        record_key = self._key(m.DISCONNECTED, mailbox_id)
        box_key = self._key(m.MAILBOXES, addr.key)
        for _ in range(CAS_ATTEMPTS):
            record_kv = await self.store.get(record_key)
            if record_kv is None:
                raise NotFoundError(_not_disconnected(mailbox_id))
            record = DisconnectedEntry.from_json(record_kv.value)
            if record.purging:
                raise InUseError(f"mailbox {mailbox_id} is being purged; it cannot be "
                                 "reconnected")
            record_guard = Compare.mod_is(record_key, record_kv.mod_revision)
            box_kv = await self.store.get(box_key)
            if box_kv is None:
                if password_hash is None:
                    raise InvalidRequestError(
                        f"{addr} is not a mailbox: give a password to create it with the "
                        f"data of mailbox {mailbox_id}"
                    )
                entry = MailboxEntry(
                    str(addr), record.display_name if display_name is None else display_name,
                    record.server, record.storage_group, record.database, password_hash,
                    mailbox_id=mailbox_id,
                )
                try:
                    await self._create_recipient(
                        addr, [Put(box_key, entry.to_json()), Delete(record_key)], [record_guard]
                    )
                except NotFoundError:
                    continue  # the record changed meanwhile: look again
                return entry, None
            current = MailboxEntry.from_json(box_kv.value)
            new = replace(current, mailbox_id=mailbox_id, server=record.server,
                          storage_group=record.storage_group, database=record.database)
            if display_name is not None:
                new = replace(new, display_name=display_name)
            if password_hash is not None:
                new = replace(new, password_hash=password_hash)
            swapped = DisconnectedEntry.of(current, time.time())
            result = await self.store.txn(
                [Compare.mod_is(box_key, box_kv.mod_revision), record_guard],
                [Put(box_key, new.to_json()), Delete(record_key),
                 Put(self._key(m.DISCONNECTED, swapped.mailbox_id), swapped.to_json())],
            )
            if result.succeeded:
                return new, swapped
        raise ConflictError(f"mailbox {address!r} kept changing; try again")

    async def begin_purge(self, mailbox_id: str) -> DisconnectedEntry:
        """Marks a disconnected mailbox as being purged (it can no longer be
        reconnected), before its data is deleted. Again after an interrupted purge."""
        key = self._key(m.DISCONNECTED, m.check_mailbox_id(mailbox_id))
        for _ in range(CAS_ATTEMPTS):
            kv = await self.store.get(key)
            if kv is None:
                raise NotFoundError(_not_disconnected(mailbox_id))
            record = DisconnectedEntry.from_json(kv.value)
            if mailbox_id in await self._attached_ids():
                raise InUseError(f"mailbox {mailbox_id} is attached to an address; "
                                 "it cannot be purged")
            marked = replace(record, purging=True)
            result = await self.store.txn([Compare.mod_is(key, kv.mod_revision)],
                                          [Put(key, marked.to_json())])
            if result.succeeded:
                return marked
        raise ConflictError(f"disconnected mailbox {mailbox_id} kept changing; try again")

    async def end_purge(self, mailbox_id: str) -> None:
        """Forgets a purged mailbox (its data is gone)."""
        key = self._key(m.DISCONNECTED, m.check_mailbox_id(mailbox_id))
        kv = await self.store.get(key)
        if kv is None or not DisconnectedEntry.from_json(kv.value).purging:
            raise ConflictError(f"mailbox {mailbox_id} is not being purged")
        await self.store.txn([Compare.mod_is(key, kv.mod_revision)], [Delete(key)])

    async def record_found(self, found: Iterable[DisconnectedEntry]) -> list[str]:
        """Records mailboxes a mail store holds that no address points to and nothing
        records (removed before mailboxes had ids, or restored from a backup), so they
        are listed and can be reconnected. Reads the store itself, not the cache: the
        snapshot must be current. Returns the ids it recorded."""
        snapshot = await self.store.range(self.prefix)
        n = len(self.prefix)
        attached: set[str] = set()
        recorded: set[str] = set()
        for kv in snapshot.kvs:
            rel = kv.key[n:]
            if rel.startswith(m.MAILBOXES):
                attached.add(MailboxEntry.from_json(kv.value).mailbox_id)
            elif rel.startswith(m.DISCONNECTED):
                recorded.add(rel[len(m.DISCONNECTED):])
        added = []
        for entry in found:
            if entry.mailbox_id in attached or entry.mailbox_id in recorded:
                continue
            key = self._key(m.DISCONNECTED, entry.mailbox_id)
            # Only `reconnect` attaches an existing id, and it needs this record: an
            # absent record is all the compare needs.
            if (await self.store.txn([Compare.absent(key)],
                                     [Put(key, entry.to_json())])).succeeded:
                added.append(entry.mailbox_id)
        return added


def _not_disconnected(mailbox_id: str) -> str:
    return (f"no disconnected mailbox {mailbox_id!r} (`clustermail user disconnected` "
            "lists them)")
