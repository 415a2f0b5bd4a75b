"""The administrator's changes to recipients: domains, mailboxes, aliases and
distribution groups, each one compare-and-swap transaction (see :mod:`.service`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from clustermail.coord import Compare, Delete, Put, TxnOp
from clustermail.mail.directory import model as m
from clustermail.mail.directory.access import CAS_ATTEMPTS
from clustermail.mail.directory.addresses import normalize_domain, parse_address
from clustermail.mail.directory.model import (
    AddressTakenError,
    AliasEntry,
    ConflictError,
    DisconnectedEntry,
    DomainEntry,
    GroupEntry,
    InUseError,
    InvalidRequestError,
    MailboxEntry,
    NotFoundError,
)
from clustermail.mail.directory.storage_plans import StoragePlans
from clustermail.mail.store.quota import QuotaLimits


class Recipients(StoragePlans):
    """Mailboxes are homed in a database of the storage plan, hence the base class."""

    # ================================================================== domains

    async def add_domain(self, domain: str, *, catch_all: str | None = None) -> DomainEntry:
        name = normalize_domain(domain)
        target = await self._catch_all_target(catch_all)
        entry = DomainEntry(name, target)
        key = self._key(m.DOMAINS, name)
        result = await self.store.txn([Compare.absent(key)], [Put(key, entry.to_json())])
        if not result.succeeded:
            raise AddressTakenError(f"domain {name!r} already exists")
        return entry

    async def _catch_all_target(self, catch_all: str | None) -> str | None:
        if catch_all is None:
            return None
        addr = parse_address(catch_all)
        found = await self._recipient(addr.key)
        if found is None:
            raise NotFoundError(
                f"catch-all {catch_all!r}: no mailbox, alias or group has that address"
            )
        return m.record_address(*found)

    async def set_catch_all(self, domain: str, catch_all: str | None) -> DomainEntry:
        """Sets (or with None clears) the mailbox, alias or group that gets mail for
        unknown local parts of ``domain``."""
        name = normalize_domain(domain)
        target = await self._catch_all_target(catch_all)
        entry = DomainEntry(name, target)
        await self._cas_update(self._key(m.DOMAINS, name), lambda _: entry.to_json(),
                               f"domain {name!r}")
        return entry

    async def remove_domain(self, domain: str) -> None:
        """Removes an empty domain; one that still holds recipients is refused."""
        name = normalize_domain(domain)
        for _ in range(CAS_ATTEMPTS):
            snapshot = await self.store.range(self.prefix)
            n = len(self.prefix)
            dom_kv = None
            counts = dict.fromkeys(m.RECIPIENT_KINDS, 0)
            for kv in snapshot.kvs:
                rel = kv.key[n:]
                if rel == m.DOMAINS + name:
                    dom_kv = kv
                for kind in m.RECIPIENT_KINDS:
                    if rel.startswith(kind) and rel.rpartition("@")[2] == name:
                        counts[kind] += 1
            if dom_kv is None:
                raise NotFoundError(f"no domain {name!r}")
            if any(counts.values()):
                held = ", ".join(
                    f"{c} {m.kind_name(k) if c == 1 else k.rstrip('/')}"
                    for k, c in counts.items() if c
                )
                raise InUseError(f"domain {name!r} still holds {held}: remove them first")
            result = await self.store.txn(
                [Compare.mod_is(dom_kv.key, dom_kv.mod_revision)], [Delete(dom_kv.key)]
            )
            if result.succeeded:
                return
        raise ConflictError(f"domain {name!r} kept changing; try again")

    async def list_domains(self) -> list[DomainEntry]:
        return [DomainEntry.from_json(raw) for _, raw in await self._items(m.DOMAINS)]

    # ================================================================== mailboxes

    async def add_mailbox(
        self,
        address: str,
        *,
        password: str,
        server: str,
        display_name: str = "",
        storage_group: str = "SG1",
        database: str = "DB1",
        quota: QuotaLimits | None = None,
    ) -> MailboxEntry:
        """Creates a mailbox homed on ``server``'s ``storage_group/database`` (which must
        be in that virtual server's storage plan). The server's mail_store resource
        creates it in the database. AddressTakenError if the address is in use."""
        addr = parse_address(address)
        m.check_server_name(server)
        m.check_display_name(display_name)
        m.check_password(password)
        await self.check_database(server, storage_group, database)
        password_hash = await self.passwords.hash(password)
        entry = MailboxEntry(
            str(addr), display_name, server, storage_group, database, password_hash, quota, True,
            mailbox_id=m.new_mailbox_id(),  # a new, empty mailbox, whoever had the address
        )
        key = self._key(m.MAILBOXES, addr.key)
        await self._create_recipient(addr, [Put(key, entry.to_json())])
        return entry

    async def remove_mailbox(self, address: str) -> MailboxEntry:
        """Removes a mailbox from the directory, with the aliases that point to it, its
        group memberships and any catch-all naming it, in one transaction. Its data stays
        in its database: the same transaction records it as a disconnected mailbox, to be
        reconnected or purged."""
        addr = parse_address(address)

        def disconnect(raw: bytes) -> list[TxnOp]:
            gone = DisconnectedEntry.of(MailboxEntry.from_json(raw), time.time())
            return [Put(self._key(m.DISCONNECTED, gone.mailbox_id), gone.to_json())]

        raw = await self._cascade_remove(m.MAILBOXES, addr.key, f"mailbox {address!r}",
                                         also=disconnect)
        return MailboxEntry.from_json(raw)

    async def list_mailboxes(
        self, domain: str | None = None, *, server: str | None = None
    ) -> list[MailboxEntry]:
        wanted = None if domain is None else normalize_domain(domain)
        out = []
        for name, raw in await self._items(m.MAILBOXES):
            if wanted is not None and name.rpartition("@")[2] != wanted:
                continue
            entry = MailboxEntry.from_json(raw)
            if server is None or entry.server == server:
                out.append(entry)
        return out

    async def set_password(self, address: str, password: str) -> MailboxEntry:
        m.check_password(password)
        new_hash = await self.passwords.hash(password)
        return await self._update_mailbox(address, lambda e: replace(e, password_hash=new_hash))

    async def set_enabled(self, address: str, enabled: bool) -> MailboxEntry:
        return await self._update_mailbox(address, lambda e: replace(e, enabled=enabled))

    async def set_quota(self, address: str, quota: QuotaLimits | None) -> MailboxEntry:
        """Overrides the database's quota for this mailbox (None: the database default)."""
        return await self._update_mailbox(address, lambda e: replace(e, quota=quota))

    async def set_display_name(self, address: str, display_name: str) -> MailboxEntry:
        m.check_display_name(display_name)
        return await self._update_mailbox(address, lambda e: replace(e, display_name=display_name))

    async def move_mailbox_entry(
        self,
        address: str,
        server: str,
        storage_group: str,
        database: str,
        *,
        expect_home: tuple[str, str, str] | None = None,
        expect_mailbox_id: str | None = None,
    ) -> MailboxEntry:
        """Switches a mailbox's home (compare-and-swap). With ``expect_home`` (and
        ``expect_mailbox_id``), refuses (ConflictError) if the home (or the mailbox the
        address points to) is no longer that one: someone else moved (or reconnected) it."""
        m.check_server_name(server)
        await self.check_database(server, storage_group, database)

        def move(entry: MailboxEntry) -> MailboxEntry:
            if expect_home is not None and entry.home != expect_home:
                raise ConflictError(
                    f"mailbox {entry.address} is now homed on {'/'.join(entry.home)}, "
                    f"not {'/'.join(expect_home)}: it was moved meanwhile"
                )
            if expect_mailbox_id is not None and entry.mailbox_id != expect_mailbox_id:
                raise ConflictError(
                    f"{entry.address} now points to mailbox {entry.mailbox_id}, not "
                    f"{expect_mailbox_id}: it was reconnected meanwhile"
                )
            return replace(entry, server=server, storage_group=storage_group, database=database)

        return await self._update_mailbox(address, move)

    async def _update_mailbox(
        self, address: str, change: Callable[[MailboxEntry], MailboxEntry]
    ) -> MailboxEntry:
        addr = parse_address(address)
        key = self._key(m.MAILBOXES, addr.key)
        new = await self._cas_update(
            key, lambda raw: change(MailboxEntry.from_json(raw)).to_json(), f"mailbox {address!r}"
        )
        return MailboxEntry.from_json(new.encode())

    # ================================================================== aliases

    async def add_alias(self, alias: str, target: str) -> AliasEntry:
        """An alias delivers to (and may be used as sender by) one mailbox."""
        addr = parse_address(alias)
        target_addr = parse_address(target)
        target_key = self._key(m.MAILBOXES, target_addr.key)
        target_kv = await self.store.get(target_key)
        if target_kv is None:
            raise NotFoundError(f"alias target {target!r} is not a mailbox")
        entry = AliasEntry(str(addr), MailboxEntry.from_json(target_kv.value).address)
        key = self._key(m.ALIASES, addr.key)
        await self._create_recipient(
            addr, [Put(key, entry.to_json())], [Compare.exists(target_key)]
        )
        return entry

    async def remove_alias(self, alias: str) -> AliasEntry:
        addr = parse_address(alias)
        raw = await self._cascade_remove(m.ALIASES, addr.key, f"alias {alias!r}")
        return AliasEntry.from_json(raw)

    async def list_aliases(self, domain: str | None = None) -> list[AliasEntry]:
        wanted = None if domain is None else normalize_domain(domain)
        return [
            AliasEntry.from_json(raw)
            for name, raw in await self._items(m.ALIASES)
            if wanted is None or name.rpartition("@")[2] == wanted
        ]

    # ================================================================== groups

    async def add_group_member(self, group: str, member: str) -> GroupEntry:
        """Adds a member (a mailbox, alias or group of a local domain) to a distribution
        group, creating the group on its first member."""
        addr = parse_address(group)
        member_addr = parse_address(member)
        if member_addr.key == addr.key:
            raise InvalidRequestError(f"group {group!r} cannot be a member of itself")
        found = await self._recipient(member_addr.key)
        if found is None:
            raise NotFoundError(f"member {member!r} is not a mailbox, alias or group")
        member_kind, member_raw = found
        member_name = m.record_address(member_kind, member_raw)
        member_guard = [Compare.exists(self._key(member_kind, member_addr.key))]
        key = self._key(m.GROUPS, addr.key)
        for _ in range(CAS_ATTEMPTS):
            kv = await self.store.get(key)
            if kv is None:
                entry = GroupEntry(str(addr), (member_name,))
                try:
                    await self._create_recipient(addr, [Put(key, entry.to_json())], member_guard)
                    return entry
                except AddressTakenError:
                    if await self.store.get(key) is None:
                        raise  # taken by a mailbox or an alias
                    continue  # someone created the group meanwhile: add to it
            current = GroupEntry.from_json(kv.value)
            if member_addr.key in {parse_address(x).key for x in current.members}:
                raise AddressTakenError(f"{member_name} is already a member of {current.address}")
            entry = GroupEntry(current.address, (*current.members, member_name))
            result = await self.store.txn(
                [Compare.mod_is(key, kv.mod_revision), *member_guard], [Put(key, entry.to_json())]
            )
            if result.succeeded:
                return entry
            if await self._recipient(member_addr.key) is None:
                raise NotFoundError(f"member {member!r} was removed meanwhile")
        raise ConflictError(f"group {group!r} kept changing; try again")

    async def remove_group_member(self, group: str, member: str) -> GroupEntry | None:
        """Removes a member; the group itself goes with its last member (returns None)."""
        addr = parse_address(group)
        member_key = parse_address(member).key
        key = self._key(m.GROUPS, addr.key)
        for _ in range(CAS_ATTEMPTS):
            kv = await self.store.get(key)
            if kv is None:
                raise NotFoundError(f"no group {group!r}")
            current = GroupEntry.from_json(kv.value)
            rest = tuple(x for x in current.members if parse_address(x).key != member_key)
            if len(rest) == len(current.members):
                raise NotFoundError(f"{member!r} is not a member of {current.address}")
            if not rest:
                try:
                    await self._cascade_remove(m.GROUPS, addr.key, f"group {group!r}",
                                               expect_mod=kv.mod_revision)
                except ConflictError:
                    continue
                return None
            entry = GroupEntry(current.address, rest)
            result = await self.store.txn(
                [Compare.mod_is(key, kv.mod_revision)], [Put(key, entry.to_json())]
            )
            if result.succeeded:
                return entry
        raise ConflictError(f"group {group!r} kept changing; try again")

    async def list_groups(self, domain: str | None = None) -> list[GroupEntry]:
        wanted = None if domain is None else normalize_domain(domain)
        return [
            GroupEntry.from_json(raw)
            for name, raw in await self._items(m.GROUPS)
            if wanted is None or name.rpartition("@")[2] == wanted
        ]
