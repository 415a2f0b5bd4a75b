"""Where a recipient goes: this virtual server, another one, or outside the cluster.

The directory says which virtual server a mailbox is homed on; the coordination store
says where that virtual server answers now (its network name's entry, written by the
``network_name`` resource of its current owner) and the applied configuration gives its
SMTP port. A virtual server that is failing over has no entry for a moment: the message
waits in the queue and is retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clustermail.cluster import keys
from clustermail.cluster.config import ConfigError
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.records import ConfigRecord, NameRecord, RecordError
from clustermail.coord import CoordError, KeyValue, Store
from clustermail.mail.backends import MailboxRef, RecipientLookup
from clustermail.mail.queue.store import EXTERNAL, LOCAL, VS_PREFIX, vs_route

DEFAULT_SMTP_PORT = 25


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Target:
    """One final recipient: its address and route (``local``, ``vs:NAME``, ``external``)."""

    address: str
    route: str
    entry: MailboxRef | None = None


class UnknownRecipient(Exception):
    pass


class Router:
    def __init__(
        self,
        directory: RecipientLookup,
        vs: str,
        store: Callable[[], Awaitable[Store]] | None = None,
        default_smtp_port: int = DEFAULT_SMTP_PORT,
    ) -> None:
        self.directory = directory
        self.vs = vs
        self._store = store
        self.default_smtp_port = default_smtp_port

    def _route(self, entry: MailboxRef) -> str:
        return LOCAL if entry.server == self.vs else vs_route(entry.server)

    async def is_local_domain(self, address: str) -> bool:
        return await self.directory.is_local_domain(domain_of(address))

    async def targets(self, address: str, *, local: bool | None = None) -> list[Target]:
        """The final recipients of an address of a local domain ([] if unknown), or the
        address itself routed outside. ``local``: :meth:`is_local_domain` of the address,
        when the caller has just asked it (SMTP's RCPT)."""
        if not (await self.is_local_domain(address) if local is None else local):
            return [Target(address, EXTERNAL)]
        return [Target(e.address, self._route(e), e) for e in await self.directory.resolve(address)]

    async def reroute(self, address: str, route: str) -> Target:
        """The current route of a queued recipient: a mailbox may have moved to another
        virtual server since it was queued. UnknownRecipient if it no longer exists."""
        if route == EXTERNAL or not route.startswith((LOCAL, VS_PREFIX)):
            return Target(address, EXTERNAL)
        entry = await self.directory.mailbox(address)
        if entry is None:
            found = await self.directory.resolve(address)
            if len(found) != 1:
                raise UnknownRecipient(address)
            entry = found[0]
        return Target(entry.address, self._route(entry), entry)

    async def endpoint(self, vs: str) -> tuple[str, int] | None:
        """(address, SMTP port) where virtual server ``vs`` answers now, or None."""
        if self._store is None:
            return None
        try:
            store = await self._store()
            names = await store.range(keys.NAMES)
            config = await store.get(keys.CONFIG)
        except CoordError:
            return None
        address = None
        for kv in names.kvs:
            try:
                entry = NameRecord.from_store(kv.key, kv.value)
            except RecordError:
                continue  # another virtual server's problem: its owner reports it
            if entry.vs == vs and entry.address:
                address = entry.address
                break
        if address is None:
            return None
        return address, _smtp_port(_applied(config), vs, self.default_smtp_port)


def _applied(kv: KeyValue | None) -> ClusterConfig | None:
    if kv is None:
        return None
    try:
        return ConfigRecord.from_store(kv.key, kv.value).parse()
    except (RecordError, ConfigError):
        return None


def _smtp_port(config: ClusterConfig | None, vs: str, default: int) -> int:
    """The ``port`` property of the virtual server's smtp resource in the applied config."""
    server = config.virtual_server(vs) if config is not None else None
    for res in server.resources if server is not None else ():
        if res.type == "smtp":
            port = res.properties.get("port", DEFAULT_SMTP_PORT)
            if isinstance(port, int) and 0 < port < 65536:
                return port
    return default
