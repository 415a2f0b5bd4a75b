"""How the directory's classes reach its records: reads through the watch-fed cache
(once :meth:`DirectoryAccess.start_cache` ran) or the store, and the compare-and-swap
write helpers every change goes through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TypeVar

from clustermail.coord import Compare, Delete, Put, Store, TxnOp
from clustermail.mail import keys
from clustermail.mail.directory import model as m
from clustermail.mail.directory.addresses import Address
from clustermail.mail.directory.auth_cache import AuthCache
from clustermail.mail.directory.cache import DirectoryCache, ErrorReporter
from clustermail.mail.directory.model import (
    AddressTakenError,
    ConflictError,
    DomainEntry,
    NotFoundError,
    UnknownDomainError,
)
from clustermail.mail.directory.passwords import Passwords

#: Compare-and-swap attempts before a write gives up with ConflictError.
CAS_ATTEMPTS = 20

Ops = list[TxnOp]
T = TypeVar("T")

#: Set while a lookup must read the store itself, not the cache (per task).
_FROM_STORE: ContextVar[bool] = ContextVar("directory_from_store", default=False)


class DirectoryAccess:
    """The store, the key prefix, the password hasher, the login cache and the optional
    directory cache."""

    def __init__(
        self,
        store: Store,
        *,
        prefix: str = keys.DIRECTORY,
        passwords: Passwords | None = None,
        auth_cache: AuthCache | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.passwords = passwords or Passwords()
        #: Successful logins of this process (see :mod:`.auth_cache`).
        self.auth_cache = auth_cache if auth_cache is not None else AuthCache()
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

    def _cached(self) -> DirectoryCache | None:
        """The cache when this lookup reads it (live, and not asked of the store)."""
        cache = self.cache
        return cache if cache is not None and cache.live and not _FROM_STORE.get() else None

    async def _confirmed(self, ask: Callable[[], Awaitable[T]], negative: Callable[[T], bool]
                         ) -> T:
        """``ask()``, asked again of the store when the cache answered no. The cache is
        behind the store by the watch delay, and a no becomes a permanent refusal (5.1.1,
        a bounce, a failed login) of an entry created or changed a moment ago: a no costs
        a store read, a yes none (Postfix's proxymap does not cache a no either)."""
        answer = await ask()
        if not negative(answer) or self._cached() is None:
            return answer
        return await self._from_store(ask)

    @staticmethod
    async def _from_store(ask: Callable[[], Awaitable[T]]) -> T:
        """``ask()`` with every read made of the store (not the cache)."""
        token = _FROM_STORE.set(True)
        try:
            return await ask()
        finally:
            _FROM_STORE.reset(token)

    # ================================================================== low-level reads

    def _key(self, sub: str, name: str) -> str:
        return self.prefix + sub + name

    async def _get(self, sub: str, name: str) -> bytes | None:
        cache = self._cached()
        if cache is not None:
            return cache.get(sub + name)
        kv = await self.store.get(self._key(sub, name))
        return None if kv is None else kv.value

    async def _items(self, sub: str) -> list[tuple[str, bytes]]:
        """(name, value) of every record under ``sub``, sorted by name."""
        cache = self._cached()
        if cache is not None:
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
        self, kind: str, key: str, what: str, *, expect_mod: int | None = None,
        also: Callable[[bytes], Ops] | None = None,
    ) -> bytes:
        """Deletes a recipient and every reference to it (aliases of a mailbox, group
        memberships, catch-alls), from one snapshot, in one transaction, with the
        operations ``also`` makes of the recipient's record."""
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
                 *(Put(self.prefix + rel, value) for rel, value in puts.items()),
                 *(also(target.value) if also is not None else ())],
            )
            if result.succeeded:
                return target.value
        raise ConflictError(f"{what} kept changing; try again")
