"""The resource type interface (a resource DLL) and what a resource gets from its host.

A resource type is a :class:`Resource` subclass registered under a type name
(:func:`clustermail.cluster.resources.register`). The resource host builds one
instance per resource of the spec, with a :class:`ResourceContext` and the
resource's :class:`Properties`, then calls, never two at once for the same
resource:

* :meth:`Resource.online` — bring it up; return when it serves. The host
  bounds it by the policy's pending timeout (cancelling it) and calls
  :meth:`Resource.terminate` after a timeout or an error.
* :meth:`Resource.offline` — stop cleanly; also bounded by the pending timeout.
* :meth:`Resource.quick_check` (LooksAlive) and :meth:`Resource.thorough_check`
  (IsAlive) while online; ``False`` or an exception is a failure.
* :meth:`Resource.terminate` — stop *now*, used after a failure, a timeout and
  when the agent is gone. Must not raise for an already stopped resource.

The constructor only parses properties (raising :class:`PropertyError`); work
that can fail at run time belongs in :meth:`Resource.online`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

from clustermail.coord import Store, open_store

R = TypeVar("R", bound="Resource")


class ResourceError(Exception):
    """A resource could not do what was asked; the text is for operators.

    ``permanent`` errors (bad configuration, a fenced disk) are not retried by
    the restart policy: the resource fails at once.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class PropertyError(ResourceError):
    """A property is missing or has the wrong type or value."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class Logger(Protocol):
    """Structured logging: ``fields`` become keys of the JSON log line."""

    def debug(self, message: str, **fields: object) -> None: ...
    def info(self, message: str, **fields: object) -> None: ...
    def warning(self, message: str, **fields: object) -> None: ...
    def error(self, message: str, **fields: object) -> None: ...


_MISSING: object = object()


class Properties(Mapping[str, object]):
    """A resource's properties, read-only, with typed getters whose errors
    name the property and what was expected."""

    def __init__(self, values: Mapping[str, object], owner: str = "resource") -> None:
        self._values = dict(values)
        self._owner = owner

    def __getitem__(self, key: str) -> object:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _get(self, key: str, default: object) -> object:
        if key in self._values:
            return self._values[key]
        if default is _MISSING:
            raise PropertyError(f"{self._owner}: property {key!r} is required")
        return default

    def _bad(self, key: str, expected: str, value: object) -> PropertyError:
        return PropertyError(f"{self._owner}: property {key!r}: expected {expected}, got {value!r}")

    def string(self, key: str, default: str | object = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            raise self._bad(key, "a non-empty string", value)
        return value

    def optional_string(self, key: str) -> str | None:
        return None if self._values.get(key) is None else self.string(key)

    def number(self, key: str, default: float | object = _MISSING, *, minimum: float = 0) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self._bad(key, f"a number >= {minimum:g}", value)
        return float(value)

    def integer(self, key: str, default: int | object = _MISSING, *, minimum: int = 0) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"an integer >= {minimum}", value)
        return value

    def boolean(self, key: str, default: bool | object = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def string_list(self, key: str, default: list[str] | object = _MISSING) -> list[str]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings", value)
        return list(value)


class StoreHandle:
    """The host's one coordination store connection, opened on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: Store | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Store:
        async with self._lock:
            if self._store is None:
                self._store = await open_store(self.url)
            return self._store

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


class GroupView(Protocol):
    """What a resource may see of the other resources of its group."""

    def resource(self, name: str) -> Resource: ...
    def type_of(self, name: str) -> str: ...
    def names(self) -> tuple[str, ...]: ...
    def dependencies_of(self, name: str) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class ResourceContext:
    """Everything a resource knows about where it runs."""

    vs: str
    node: str
    #: The fencing epoch of this ownership of the virtual server.
    epoch: int
    data_dir: Path
    store_url: str
    #: This resource's name and type name.
    resource: str
    type_name: str
    log: Logger
    _store: StoreHandle
    _group: GroupView

    async def store(self) -> Store:
        """The coordination store, opened lazily and shared by the host."""
        return await self._store.get()

    def get(self, name: str) -> Resource:
        """Another resource of the group by name (KeyError if there is none)."""
        return self._group.resource(name)

    def of_type(self, type_name: str) -> list[Resource]:
        """The group's resources of a type, in spec order."""
        g = self._group
        return [g.resource(n) for n in g.names() if g.type_of(n) == type_name]

    def dependencies(self) -> list[Resource]:
        """This resource's direct dependencies, in spec order."""
        return [self._group.resource(n) for n in self._group.dependencies_of(self.resource)]

    def dependency(self, kind: type[R]) -> R:
        """The first direct dependency that is a ``kind``; a permanent
        :class:`ResourceError` if the spec gives none."""
        for dep in self.dependencies():
            if isinstance(dep, kind):
                return dep
        raise ResourceError(
            f"{self.resource}: needs a dependency of type {kind.type_name or kind.__name__} "
            "(add it to depends_on)",
            permanent=True,
        )

    def env(self) -> dict[str, str]:
        """Environment variables naming the virtual server, for child processes."""
        return {
            "CLUSTERMAIL_VS": self.vs,
            "CLUSTERMAIL_NODE": self.node,
            "CLUSTERMAIL_EPOCH": str(self.epoch),
        }


class Resource(abc.ABC):
    """One resource of a virtual server. See the module docstring for the contract."""

    #: The name the type is registered under (set by ``register``).
    type_name: ClassVar[str] = ""

    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        self.ctx = ctx
        self.properties = properties

    @abc.abstractmethod
    async def online(self) -> None:
        """Brings the resource online; raises :class:`ResourceError` if it cannot."""

    @abc.abstractmethod
    async def offline(self) -> None:
        """Takes the resource offline cleanly."""

    @abc.abstractmethod
    async def quick_check(self) -> bool:
        """LooksAlive: cheap, frequent."""

    @abc.abstractmethod
    async def thorough_check(self) -> bool:
        """IsAlive: thorough, less frequent."""

    async def terminate(self) -> None:
        """Stops the resource at once. The default is :meth:`offline`, right
        for resources that hold nothing a clean stop could hang on."""
        await self.offline()

    @property
    def pid(self) -> int | None:
        """The process serving this resource, when it is a separate process."""
        return None
