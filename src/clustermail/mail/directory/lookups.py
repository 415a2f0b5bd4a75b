"""What the protocols ask the directory: who gets a message, who may log in, which
addresses a mailbox may send as. Reads only (a login may upgrade an old password hash).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import replace

from clustermail.coord import Compare, Put
from clustermail.mail.directory import model as m
from clustermail.mail.directory.access import DirectoryAccess
from clustermail.mail.directory.addresses import Address, normalize_domain, parse_address
from clustermail.mail.directory.model import AliasEntry, GroupEntry, MailboxEntry

#: Nesting depth at which group expansion stops (cycles are cut earlier).
MAX_EXPANSION_DEPTH = 32


class Lookups(DirectoryAccess):
    async def is_local_domain(self, domain: str) -> bool:
        try:
            name = normalize_domain(domain)
        except ValueError:
            return False
        return await self._confirmed(lambda: self._has_domain(name), _no)

    async def _has_domain(self, name: str) -> bool:
        return await self._get(m.DOMAINS, name) is not None

    async def resolve(self, address: str) -> list[MailboxEntry]:
        """The enabled mailboxes a message to ``address`` goes to: aliases and groups
        (nested, cycles cut) expanded, ``+tag`` ignored, the domain's catch-all used for
        an unknown local part. [] when nobody would get it. Raises
        InvalidAddressError for a malformed address."""
        addr = parse_address(address)
        return await self._confirmed(lambda: self._resolve(addr), _no)

    async def _resolve(self, addr: Address) -> list[MailboxEntry]:
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
        return await self._confirmed(lambda: self._mailbox(addr), _no)

    async def _mailbox(self, addr: Address) -> MailboxEntry | None:
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

    async def authenticate_cached(self, username: str, password: str) -> MailboxEntry | None:
        """The enabled mailbox when the login cache vouches for ``password`` (verified
        against the mailbox's current hash less than a TTL ago); None means "not known",
        never "wrong": the caller then verifies with :meth:`authenticate`. No hashing."""
        entry = await self._login_mailbox(username)
        if (entry is not None and entry.enabled and self.auth_cache.hit(
                username, password, entry.password_hash, time.monotonic())):
            return entry
        return None

    async def authenticate(self, username: str, password: str) -> MailboxEntry | None:
        """The mailbox when ``password`` is right for ``username`` (its address, any case,
        or an alias of it) and the mailbox is enabled; None otherwise. Unknown users cost
        a hash verification too, so timing does not tell who exists."""
        entry = await self._login_mailbox(username)
        now = time.monotonic()
        if (entry is not None and entry.enabled
                and self.auth_cache.hit(username, password, entry.password_hash, now)):
            return entry  # verified against this very hash less than a TTL ago
        ok = await self.passwords.verify(None if entry is None else entry.password_hash, password)
        if not (ok and entry is not None and entry.enabled) and self._cached() is not None:
            # The cache may not hold the mailbox yet, or still its old password or state.
            fresh = await self._from_store(lambda: self._login_mailbox(username))
            if fresh is not None and fresh != entry:
                entry = fresh
                ok = await self.passwords.verify(entry.password_hash, password)
        if entry is None or not ok or not entry.enabled:
            return None
        if self.passwords.needs_rehash(entry.password_hash):
            await self._rehash(entry, password)  # the new hash misses until verified again
        else:
            self.auth_cache.remember(username, password, entry.password_hash, now)
        return entry

    async def _rehash(self, entry: MailboxEntry, password: str) -> None:
        """Upgrades a hash made with old parameters; best effort (a race just skips it)."""
        new = await self.passwords.hash(password)
        key = self._key(m.MAILBOXES, parse_address(entry.address).key)
        await self.store.txn(
            [Compare.value_is(key, entry.to_json())],
            [Put(key, replace(entry, password_hash=new).to_json())],
        )

    async def send_as(self, mailbox: str, *, covering: Collection[str] = ()) -> set[str]:
        """Lookup keys (:attr:`Address.key`, lowercased local part) of the addresses
        ``mailbox`` may send as: its own and its aliases'. Empty for unknown mailboxes.
        ``covering``: the addresses the caller is about to check (a sender); when the
        cache's answer lacks one, the store is asked (an alias made a moment ago)."""
        need = {a.lower() for a in covering}
        return await self._confirmed(lambda: self._send_as(mailbox),
                                     lambda keys: not need <= {k.lower() for k in keys})

    async def _send_as(self, mailbox: str) -> set[str]:
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


def _no(answer: object) -> bool:
    """A lookup's negative answer (False, [], None): see DirectoryAccess._confirmed."""
    return not answer
