"""The ``network_name`` resource: publishes where a virtual server answers.

Online writes ``/clustermail/names/<name>`` (a ``NameRecord``: name, address,
node, virtual server, epoch). The entry is persistent (no lease), so clients
can still find the name while the group moves; the epoch makes a stale owner
harmless: the write is a compare-and-swap that never replaces an entry with a
higher epoch, and offline deletes the entry only while it is still ours.

Properties: ``name`` (required). The address comes from the ``ip_address``
resource this one depends on.
"""

from __future__ import annotations

from clustermail.cluster import keys
from clustermail.cluster.records import NameRecord, RecordError
from clustermail.cluster.resource_schema import (
    PropertyKind,
    PropertySpec,
    ResourceType,
    non_empty,
)
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.cluster.resources.ip_address import IpAddressResource
from clustermail.coord import Compare, CoordError, Delete, Put

#: Compare-and-swap attempts against concurrent writers before giving up.
CAS_ATTEMPTS = 5


def name_key(name: str) -> str:
    return f"{keys.NAMES}{name}"


class NetworkNameResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.name = properties.string("name")
        if "/" in self.name or not self.name.strip():
            raise PropertyError(f"{ctx.resource}: property 'name': {self.name!r} is not a name")
        self.key = name_key(self.name)
        self._value: bytes | None = None

    def _entry(self) -> bytes:
        address = self.ctx.dependency(IpAddressResource).address
        return NameRecord(name=self.name, address=address, node=self.ctx.node, vs=self.ctx.vs,
                          epoch=self.ctx.epoch).to_store()

    async def online(self) -> None:
        value = self._entry()
        store = await self.ctx.store()
        for _ in range(CAS_ATTEMPTS):
            current = await store.get(self.key)
            guard = Compare.absent(self.key)
            if current is not None:
                try:
                    theirs = NameRecord.from_store(current.key, current.value)
                except RecordError as exc:
                    # Unreadable: nobody can rely on it; ours replaces it.
                    self.ctx.log.warning(f"replacing a malformed entry: {exc}")
                    theirs = NameRecord()
                if theirs.vs and theirs.vs != self.ctx.vs:
                    raise ResourceError(
                        f"{self.ctx.resource}: name {self.name!r} belongs to virtual server "
                        f"{theirs.vs!r}, not {self.ctx.vs!r}",
                        permanent=True,
                    )
                if theirs.epoch > self.ctx.epoch:
                    raise ResourceError(
                        f"{self.ctx.resource}: name {self.name!r} is published by epoch "
                        f"{theirs.epoch} ({current.value.decode(errors='replace')}), newer "
                        f"than ours ({self.ctx.epoch}): a newer owner exists",
                        permanent=True,
                    )
                guard = Compare.mod_is(self.key, current.mod_revision)
            result = await store.txn([guard], [Put(self.key, value)])
            if result.succeeded:
                self._value = value
                return
        raise ResourceError(f"{self.ctx.resource}: {self.key} keeps changing under us")

    async def offline(self) -> None:
        value, self._value = self._value, None
        if value is None:
            return
        store = await self.ctx.store()
        # Only our own entry: a newer owner may already have replaced it.
        await store.txn([Compare.value_is(self.key, value)], [Delete(self.key)])

    async def terminate(self) -> None:
        # Forceful stop: leave the store alone (the next owner overwrites the
        # entry with a higher epoch); the store may be what is failing.
        self._value = None

    async def quick_check(self) -> bool:
        return self._value is not None

    async def thorough_check(self) -> bool:
        if self._value is None:
            return False
        try:
            current = await (await self.ctx.store()).get(self.key)
        except CoordError as exc:
            # Unreachable store: the node agent fences on its lease; a name
            # check cannot tell more.
            self.ctx.log.warning(f"cannot check {self.key}: {exc}")
            return True
        if current is None or current.value != self._value:
            self.ctx.log.error(f"{self.key} is no longer ours")
            return False
        return True


NETWORK_NAME_TYPE = ResourceType(
    "network_name",
    NetworkNameResource,
    {"name": PropertySpec(PropertyKind.STR, required=True, check=non_empty)},
)
