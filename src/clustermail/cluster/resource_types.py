"""The registry of resource types: entry points of the ``clustermail.resource_types`` group.

Every resource type, ours and a third party's, is declared the same way: an
entry point named for the type whose object is its
:class:`~clustermail.cluster.resource_schema.ResourceType`, in the
``pyproject.toml`` of the distribution that ships it::

    [project.entry-points."clustermail.resource_types"]
    ip_address = "clustermail.cluster.resources.ip_address:IP_ADDRESS_TYPE"
    echo = "acme_echo.resource:ECHO_TYPE"      # a third party's

A type is imported only when a configuration or a resource host first uses
it, so listing the names (for an error message) imports nothing. Configuration
validation and the resource host both look types up here, and nothing has to
be imported beforehand for a type to be known.

Types run *inside* the resource host process (asyncio servers on its loop),
so they must never block the loop.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import EntryPoint, entry_points

from clustermail.cluster.resource_schema import ResourceType

#: The entry point group a distribution declares its resource types in.
ENTRY_POINT_GROUP = "clustermail.resource_types"

_loaded: dict[str, ResourceType] = {}


class ResourceTypeError(Exception):
    """A declared resource type cannot be used; the text says which and why."""


class UnknownResourceType(ResourceTypeError, LookupError):
    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name

    def __str__(self) -> str:
        return (
            f"unknown resource type {self.type_name!r} (known: "
            f"{', '.join(resource_type_names())}; a distribution declares more as entry "
            f"points of the group {ENTRY_POINT_GROUP!r})"
        )


@functools.cache
def _declared() -> dict[str, tuple[EntryPoint, ...]]:
    found: dict[str, tuple[EntryPoint, ...]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # The same declaration seen twice (one distribution on two paths) is one.
        if ep not in found.get(ep.name, ()):
            found[ep.name] = (*found.get(ep.name, ()), ep)
    return found


def resource_type_names() -> list[str]:
    """Every declared type, sorted (nothing is imported)."""
    return sorted(_declared())


def find(name: str) -> ResourceType | None:
    """The type ``name``, imported on first use; None if no distribution declares it.
    Raises :class:`ResourceTypeError` if it is declared but cannot be loaded."""
    if name in _loaded:
        return _loaded[name]
    declared = _declared().get(name)
    if not declared:
        return None
    if len(declared) > 1:
        where = ", ".join(f"{ep.value} ({_dist(ep)})" for ep in declared)
        raise ResourceTypeError(f"resource type {name!r} is declared more than once: {where}")
    rtype = _load(name, declared[0])
    _loaded[name] = rtype
    return rtype


def get(name: str) -> ResourceType:
    """The type ``name``; :class:`UnknownResourceType` if none is declared."""
    rtype = find(name)
    if rtype is None:
        raise UnknownResourceType(name)
    return rtype


def load_all() -> list[ResourceTypeError]:
    """Imports every declared type (a spare resource host does, while it waits
    for work); returns the problems rather than stopping at the first."""
    problems: list[ResourceTypeError] = []
    for name in resource_type_names():
        try:
            find(name)
        except ResourceTypeError as exc:
            problems.append(exc)
    return problems


def forget() -> None:
    """Forgets what was found, so distributions installed since are seen."""
    _declared.cache_clear()
    _loaded.clear()
    importlib.invalidate_caches()


def _load(name: str, ep: EntryPoint) -> ResourceType:
    # Here, not at the top: configuration validation imports this module and
    # stays free of the resource host's I/O code until a type is loaded.
    from clustermail.cluster.resources.base import Resource

    what = f"resource type {name!r} ({ep.value}, from {_dist(ep)})"
    try:
        obj = ep.load()
    except Exception as exc:
        raise ResourceTypeError(f"cannot load {what}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, ResourceType):
        raise ResourceTypeError(f"{what} is not a ResourceType: got {obj!r}")
    if obj.name != name:
        raise ResourceTypeError(f"{what} is named {obj.name!r}: the entry point must be too")
    if not (isinstance(obj.resource, type) and issubclass(obj.resource, Resource)):
        raise ResourceTypeError(f"{what}: {obj.resource!r} is not a Resource subclass")
    return obj


def _dist(ep: EntryPoint) -> str:
    dist = ep.dist
    return "an unknown distribution" if dist is None else f"{dist.name} {dist.version}"
