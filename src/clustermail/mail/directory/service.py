"""The recipient directory: domains, mailboxes, aliases and distribution groups.

It lives in the coordination store (``clustermail.cluster.keys.DIRECTORY``) so
every node sees the same directory and a virtual server finds its users
wherever it runs. Layout and records: :mod:`.model`.

Writes that must not collide are compare-and-swap transactions: creating a
recipient compares its address absent under all three kinds (one address is
one mailbox, alias or group), and "touches" its domain's key (same value,
new mod revision), so removing a domain, which compares that mod revision,
can never race with a recipient being added to it.

Reads go to the store, or to a watch-fed local copy once :meth:`start_cache`
ran (resource hosts do; admin commands do not).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from clustermail.cluster import keys
from clustermail.coord import Compare, Delete, Put, Store, TxnOp
from clustermail.mail.directory import model as m
from clustermail.mail.directory.addresses import Address, normalize_domain, parse_address
from clustermail.mail.directory.cache import DirectoryCache, ErrorReporter
from clustermail.mail.directory.model import (
    AddressTakenError,
    AliasEntry,
    ConflictError,
    DomainEntry,
    GroupEntry,
    InUseError,
    InvalidRequestError,
    MailboxEntry,
    NotFoundError,
    UnknownDomainError,
)
from clustermail.mail.directory.passwords import Passwords
from clustermail.mail.store.errors import LayoutError
from clustermail.mail.store.layout import Layout, default_layout
from clustermail.mail.store.quota import QuotaLimits

__all__ = [
    "AddressTakenError",
    "AliasEntry",
    "ConflictError",
    "Directory",
    "DomainEntry",
    "GroupEntry",
    "InUseError",
    "InvalidRequestError",
    "MailboxEntry",
    "NotFoundError",
    "UnknownDomainError",
]

#: Compare-and-swap attempts before a write gives up with ConflictError.
CAS_ATTEMPTS = 20
#: Nesting depth at which group expansion stops (cycles are cut earlier).
MAX_EXPANSION_DEPTH = 32

Ops = list[TxnOp]


class Directory:
    """See the module docstring. Every method is safe to call concurrently."""

    def __init__(
        self,
        store: Store,
        *,
        prefix: str = keys.DIRECTORY,
        passwords: Passwords | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.passwords = passwords or Passwords()
        self.cache: DirectoryCache | None = None

    # ================================================================== cache

    async def start_cache(self, on_error: ErrorReporter | None = None) -> DirectoryCache:
        """Loads the directory into memory and keeps it current; reads use it from now on."""
        if self.cache is None:
            cache = DirectoryCache(self.store, self.prefix, on_error)
            await cache.start()
            self.cache = cache
        return self.cache

    async def close(self) -> None:
        """Stops the cache (the store belongs to the caller)."""
        cache, self.cache = self.cache, None
        if cache is not None:
            await cache.close()

    # ================================================================== low-level reads

    def _key(self, sub: str, name: str) -> str:
        return self.prefix + sub + name

    async def _get(self, sub: str, name: str) -> bytes | None:
        cache = self.cache
        if cache is not None and cache.live:
            return cache.get(sub + name)
        kv = await self.store.get(self._key(sub, name))
        return None if kv is None else kv.value

    async def _items(self, sub: str) -> list[tuple[str, bytes]]:
        """(name, value) of every record under ``sub``, sorted by name."""
        cache = self.cache
        if cache is not None and cache.live:
            return [(k[len(sub) :], v) for k, v in cache.items(sub)]
        result = await self.store.range(self.prefix + sub)
        n = len(self.prefix) + len(sub)
        return [(kv.key[n:], kv.value) for kv in result.kvs]

    async def _recipient(self, key: str) -> tuple[str, bytes] | None:
        """(kind, record) of the mailbox, alias or group with lookup key ``key``."""
        for kind in m.RECIPIENT_KINDS:
            raw = await self._get(kind, key)
            if raw is not None:
                return kind, raw
        return None

    async def _find(self, addr: Address) -> tuple[str, str, bytes] | None:
        """(kind, key, record) of an address, or of its base without the +tag."""
        found = await self._recipient(addr.key)
        if found is not None:
            return found[0], addr.key, found[1]
        base = addr.base()
        if base is not None and (found := await self._recipient(base.key)) is not None:
            return found[0], base.key, found[1]
        return None

    async def _domain_entry(self, domain: str) -> DomainEntry | None:
        raw = await self._get(m.DOMAINS, domain)
        return None if raw is None else DomainEntry.from_json(raw)

    # ================================================================== lookups

    async def is_local_domain(self, domain: str) -> bool:
        try:
            name = normalize_domain(domain)
        except ValueError:
            return False
        return await self._get(m.DOMAINS, name) is not None

    async def resolve(self, address: str) -> list[MailboxEntry]:
        """The enabled mailboxes a message to ``address`` goes to: aliases and groups
        (nested, cycles cut) expanded, ``+tag`` ignored, the domain's catch-all used for
        an unknown local part. [] when nobody would get it. Raises
        InvalidAddressError for a malformed address."""
        addr = parse_address(address)
        if await self._domain_entry(addr.domain) is None:
            return []
        found: dict[str, MailboxEntry] = {}
        await self._expand(addr, found, set(), 0, catch_all=True)
        return list(found.values())

    async def _expand(
        self, addr: Address, out: dict[str, MailboxEntry], seen: set[str], depth: int,
        *, catch_all: bool,
    ) -> None:
        if depth > MAX_EXPANSION_DEPTH:
            return
        record = await self._find(addr)
        if record is None:
            domain = await self._domain_entry(addr.domain) if catch_all else None
            if domain is not None and domain.catch_all:
                target = parse_address(domain.catch_all)
                await self._expand(target, out, seen, depth + 1, catch_all=False)
            return
        kind, key, raw = record
        if key in seen:
            return  # a group cycle, or the same recipient twice
        seen.add(key)
        if kind == m.MAILBOXES:
            entry = MailboxEntry.from_json(raw)
            if entry.enabled:
                out.setdefault(key, entry)
        elif kind == m.ALIASES:
            target = parse_address(AliasEntry.from_json(raw).target)
            await self._expand(target, out, seen, depth + 1, catch_all=False)
        else:
            for member in GroupEntry.from_json(raw).members:
                await self._expand(parse_address(member), out, seen, depth + 1, catch_all=False)

    async def kind_of(self, address: str) -> str | None:
        """"mailbox", "alias" or "group" when ``address`` (exactly, any case) names one."""
        found = await self._recipient(parse_address(address).key)
        return None if found is None else m.kind_name(found[0])

    async def mailbox(self, address: str) -> MailboxEntry | None:
        """The mailbox an address names (directly, through an alias, or by its base
        without the ``+tag``), enabled or not; None for groups and unknown addresses."""
        addr = parse_address(address)
        record = await self._find(addr)
        if record is None:
            return None
        kind, _, raw = record
        if kind == m.MAILBOXES:
            return MailboxEntry.from_json(raw)
        if kind == m.ALIASES:
            target = parse_address(AliasEntry.from_json(raw).target)
            raw_box = await self._get(m.MAILBOXES, target.key)
            return None if raw_box is None else MailboxEntry.from_json(raw_box)
        return None

    async def _login_mailbox(self, username: str) -> MailboxEntry | None:
        """A mailbox by its address or an alias of it (no ``+tag`` logins)."""
        try:
            addr = parse_address(username)
        except ValueError:
            return None
        found = await self._recipient(addr.key)
        if found is None:
            return None
        kind, raw = found
        if kind == m.ALIASES:
            target = parse_address(AliasEntry.from_json(raw).target)
            raw_box = await self._get(m.MAILBOXES, target.key)
            return None if raw_box is None else MailboxEntry.from_json(raw_box)
        return MailboxEntry.from_json(raw) if kind == m.MAILBOXES else None

    async def authenticate(self, username: str, password: str) -> MailboxEntry | None:
        """The mailbox when ``password`` is right for ``username`` (its address, any case,
        or an alias of it) and the mailbox is enabled; None otherwise. Unknown users cost
        a hash verification too, so timing does not tell who exists."""
        entry = await self._login_mailbox(username)
        ok = await self.passwords.verify(None if entry is None else entry.password_hash, password)
        if entry is None or not ok or not entry.enabled:
            return None
        if self.passwords.needs_rehash(entry.password_hash):
            await self._rehash(entry, password)
        return entry

    async def _rehash(self, entry: MailboxEntry, password: str) -> None:
        """Upgrades a hash made with old parameters; best effort (a race just skips it)."""
        new = await self.passwords.hash(password)
        key = self._key(m.MAILBOXES, parse_address(entry.address).key)
        await self.store.txn(
            [Compare.value_is(key, entry.to_json())],
            [Put(key, _replace(entry, password_hash=new).to_json())],
        )

    async def send_as(self, mailbox: str) -> set[str]:
        """Lookup keys (:attr:`Address.key`, lowercased local part) of the addresses
        ``mailbox`` may send as: its own and its aliases'. Empty for unknown mailboxes."""
        entry = await self.mailbox(mailbox)
        if entry is None:
            return set()
        own = parse_address(entry.address).key
        allowed = {own}
        for name, raw in await self._items(m.ALIASES):
            if parse_address(AliasEntry.from_json(raw).target).key == own:
                allowed.add(name)
        return allowed

    async def may_send_as(self, mailbox: str, sender: str) -> bool:
        """Whether ``mailbox`` may use ``sender`` as its address (any case; a malformed
        sender never)."""
        try:
            key = parse_address(sender).key
        except ValueError:
            return False
        return key in await self.send_as(mailbox)

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
            str(addr), display_name, server, storage_group, database, password_hash, quota, True
        )
        key = self._key(m.MAILBOXES, addr.key)
        await self._create_recipient(addr, [Put(key, entry.to_json())])
        return entry

    async def remove_mailbox(self, address: str) -> MailboxEntry:
        """Removes a mailbox from the directory, with the aliases that point to it, its
        group memberships and any catch-all naming it, in one transaction. Its data stays
        in its database (a disconnected mailbox) until purged."""
        addr = parse_address(address)
        raw = await self._cascade_remove(m.MAILBOXES, addr.key, f"mailbox {address!r}")
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
        return await self._update_mailbox(address, lambda e: _replace(e, password_hash=new_hash))

    async def set_enabled(self, address: str, enabled: bool) -> MailboxEntry:
        return await self._update_mailbox(address, lambda e: _replace(e, enabled=enabled))

    async def set_quota(self, address: str, quota: QuotaLimits | None) -> MailboxEntry:
        """Overrides the database's quota for this mailbox (None: the database default)."""
        return await self._update_mailbox(address, lambda e: _replace(e, quota=quota))

    async def set_display_name(self, address: str, display_name: str) -> MailboxEntry:
        m.check_display_name(display_name)
        return await self._update_mailbox(address, lambda e: _replace(e, display_name=display_name))

    async def move_mailbox_entry(
        self,
        address: str,
        server: str,
        storage_group: str,
        database: str,
        *,
        expect_home: tuple[str, str, str] | None = None,
    ) -> MailboxEntry:
        """Switches a mailbox's home (compare-and-swap). With ``expect_home``, refuses
        (ConflictError) if the home is no longer that one: someone else moved it."""
        m.check_server_name(server)
        await self.check_database(server, storage_group, database)

        def move(entry: MailboxEntry) -> MailboxEntry:
            if expect_home is not None and entry.home != expect_home:
                raise ConflictError(
                    f"mailbox {entry.address} is now homed on {'/'.join(entry.home)}, "
                    f"not {'/'.join(expect_home)}: it was moved meanwhile"
                )
            return _replace(entry, server=server, storage_group=storage_group, database=database)

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

    # ================================================================== storage plans

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

    # ================================================================== write helpers

    async def _cas_update(self, key: str, change: Callable[[bytes], str], what: str) -> str:
        for _ in range(CAS_ATTEMPTS):
            kv = await self.store.get(key)
            if kv is None:
                raise NotFoundError(f"no {what}")
            new = change(kv.value)
            if (await self.store.txn([Compare.mod_is(key, kv.mod_revision)],
                                     [Put(key, new)])).succeeded:
                return new
        raise ConflictError(f"{what} kept changing; try again")

    async def _create_recipient(
        self, addr: Address, puts: Ops, guards: Sequence[Compare] = ()
    ) -> None:
        """Runs ``puts`` if the address is free under every kind and its domain exists."""
        dom_key = self._key(m.DOMAINS, addr.domain)
        taken = [self._key(kind, addr.key) for kind in m.RECIPIENT_KINDS]
        for _ in range(CAS_ATTEMPTS):
            dom = await self.store.get(dom_key)
            if dom is None:
                raise UnknownDomainError(addr.domain)
            result = await self.store.txn(
                [Compare.value_is(dom_key, dom.value), *map(Compare.absent, taken), *guards],
                [*puts, Put(dom_key, dom.value)],  # touch: a concurrent remove_domain fails
            )
            if result.succeeded:
                return
            for kind, key in zip(m.RECIPIENT_KINDS, taken, strict=True):
                kv = await self.store.get(key)
                if kv is not None:
                    raise AddressTakenError(
                        f"{m.record_address(kind, kv.value)} is already {m.a_kind(kind)}"
                    )
            for guard in guards:
                if not guard.holds(await self.store.get(guard.key)):
                    raise NotFoundError(f"a recipient {addr} refers to was removed meanwhile")
        raise ConflictError(f"domain {addr.domain!r} kept changing; try again")

    async def _cascade_remove(
        self, kind: str, key: str, what: str, *, expect_mod: int | None = None
    ) -> bytes:
        """Deletes a recipient and every reference to it (aliases of a mailbox, group
        memberships, catch-alls), from one snapshot, in one transaction."""
        for _ in range(CAS_ATTEMPTS):
            snapshot = await self.store.range(self.prefix)
            records = {kv.key[len(self.prefix) :]: kv for kv in snapshot.kvs}
            target = records.get(kind + key)
            if target is None:
                raise NotFoundError(f"no {what}")
            if expect_mod is not None and target.mod_revision != expect_mod:
                raise ConflictError(f"{what} changed meanwhile")
            deletes, puts = m.references_removed(records, kind, key)
            touched = [records[rel] for rel in (*deletes, *puts)]
            result = await self.store.txn(
                [Compare.mod_is(kv.key, kv.mod_revision) for kv in touched],
                [*(Delete(self.prefix + rel) for rel in deletes),
                 *(Put(self.prefix + rel, value) for rel, value in puts.items())],
            )
            if result.succeeded:
                return target.value
        raise ConflictError(f"{what} kept changing; try again")


def _replace(entry: MailboxEntry, **changes: Any) -> MailboxEntry:
    return replace(entry, **changes)
