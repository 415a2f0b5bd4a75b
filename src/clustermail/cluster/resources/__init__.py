"""Resource types by name (the resource DLLs the resource host can load).

Generic types are registered here. Other layers add theirs from a plug-in
module that the virtual server spec lists in ``"plugins"``; the resource host
imports those modules before it builds the resources, and each registers its
types at import time::

    # clustermail/mail/resources.py
    from clustermail.cluster.resources import register
    register("smtp", SmtpResource)          # or: @register("smtp") on the class

Such types run *inside* the resource host process (asyncio servers on its
loop), so they must never block the loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import overload

from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.cluster.resources.disk import DiskResource
from clustermail.cluster.resources.ip_address import IpAddressResource
from clustermail.cluster.resources.network_name import NetworkNameResource
from clustermail.cluster.resources.process import ProcessResource

__all__ = [
    "PluginError",
    "Properties",
    "PropertyError",
    "Resource",
    "ResourceContext",
    "ResourceError",
    "UnknownResourceType",
    "known_types",
    "load_plugins",
    "lookup",
    "register",
]

_types: dict[str, type[Resource]] = {}

ResourceClass = type[Resource]


class UnknownResourceType(KeyError):
    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name

    def __str__(self) -> str:
        return (
            f"unknown resource type {self.type_name!r} (known: {', '.join(known_types())}; "
            "a plug-in module listed in the spec's 'plugins' can register more)"
        )


class PluginError(ImportError):
    """A plug-in module could not be imported."""


@overload
def register(name: str, cls: ResourceClass) -> ResourceClass: ...
@overload
def register(name: str) -> Callable[[ResourceClass], ResourceClass]: ...
@overload
def register(name: ResourceClass) -> ResourceClass: ...


def register(
    name: str | ResourceClass, cls: ResourceClass | None = None
) -> ResourceClass | Callable[[ResourceClass], ResourceClass]:
    """Registers a resource type: ``register("smtp", Cls)``, ``register(Cls)``
    (uses ``Cls.type_name``) or ``@register("smtp")``. Registering the same
    class again is a no-op; another class under a taken name is an error."""
    if not isinstance(name, str):
        return _add(name.type_name, name)
    type_name = name
    if cls is not None:
        return _add(type_name, cls)
    return lambda c: _add(type_name, c)


def _add(type_name: str, cls: ResourceClass) -> ResourceClass:
    if not type_name:
        raise ValueError(f"{cls.__name__} has no type_name: use register(name, cls)")
    if not (isinstance(cls, type) and issubclass(cls, Resource)):
        raise TypeError(f"{cls!r} is not a Resource subclass")
    existing = _types.get(type_name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"resource type {type_name!r} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}"
        )
    if not cls.type_name:
        cls.type_name = type_name
    _types[type_name] = cls
    return cls


def lookup(type_name: str) -> ResourceClass:
    try:
        return _types[type_name]
    except KeyError:
        raise UnknownResourceType(type_name) from None


def known_types() -> list[str]:
    return sorted(_types)


def load_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Imports plug-in modules (which register their types when imported)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(
                f"cannot load resource plug-in {module!r}: {type(exc).__name__}: {exc}"
            ) from exc


register("ip_address", IpAddressResource)
register("network_name", NetworkNameResource)
register("disk", DiskResource)
register("process", ProcessResource)
