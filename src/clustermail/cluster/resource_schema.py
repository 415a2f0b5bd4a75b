"""The registry of resource types and their property schemas (data, no behaviour).

Configuration validation looks types up here. Each layer registers the types
it implements at import time with :func:`register_resource_type` (the mail
layer adds ``mail_store``, ``smtp``, ``pop3``, ``imap4``), so the process that
validates a configuration must import those modules first.

String properties may hold the placeholders ``{data}`` (the node's data
directory) and ``{python}`` (the interpreter); the resource host expands them.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from clustermail.cluster.model import PropertyValue


class PropertyKind(enum.StrEnum):
    STR = "string"
    INT = "integer"
    FLOAT = "number"
    BOOL = "boolean"
    STR_LIST = "list of strings"
    COMMAND = "string or list of strings"  # a shell line or an argv


@dataclass(frozen=True, slots=True)
class PropertySpec:
    kind: PropertyKind
    required: bool = False
    choices: tuple[str, ...] = ()  # allowed values of a STR property
    default: PropertyValue | None = None  # filled in when the property is absent
    # Checks the value's format; returns what was expected, or None when fine.
    check: Callable[[PropertyValue], str | None] | None = field(default=None, compare=False)


# Cross-property rules of one type: (property, message) for each problem.
TypeCheck = Callable[[Mapping[str, PropertyValue]], Sequence[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class ResourceTypeSchema:
    name: str
    properties: Mapping[str, PropertySpec]
    check: TypeCheck | None = field(default=None, compare=False)


_REGISTRY: dict[str, ResourceTypeSchema] = {}


def register_resource_type(
    name: str,
    properties_schema: Mapping[str, PropertySpec],
    check: TypeCheck | None = None,
) -> ResourceTypeSchema:
    """Makes ``name`` valid in configurations; registering the same schema again is a no-op."""
    schema = ResourceTypeSchema(name, MappingProxyType(dict(properties_schema)), check)
    existing = _REGISTRY.get(name)
    if existing is not None and existing != schema:
        raise ValueError(f"resource type {name!r} is already registered with another schema")
    _REGISTRY[name] = schema
    return schema


def resource_type(name: str) -> ResourceTypeSchema | None:
    return _REGISTRY.get(name)


def resource_type_names() -> list[str]:
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------- built-ins


def _ip(value: PropertyValue) -> str | None:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return "an IPv4 or IPv6 address such as 127.0.0.11"
    return None


def _host_port(value: PropertyValue) -> str | None:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return '"host:port" with a port from 1 to 65535, such as "127.0.0.11:2525"'
    return None


def _non_empty(value: PropertyValue) -> str | None:
    return "a non-empty value" if value in ("", ()) else None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _env_list(value: PropertyValue) -> str | None:
    items = value if isinstance(value, tuple) else ()
    if all(_ENV_NAME.match(item) for item in items):
        return None
    return 'a list of "NAME=value" strings, such as ["LANG=C.UTF-8"]'


def _check_ip_address(props: Mapping[str, PropertyValue]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if props.get("mode") == "interface" and "interface" not in props:
        problems.append(("interface", 'required when mode = "interface"'))
    prefix = props.get("prefix")
    if isinstance(prefix, int) and not isinstance(prefix, bool):
        try:
            bits = ipaddress.ip_address(str(props.get("address"))).max_prefixlen
        except ValueError:
            bits = 128  # the address itself is reported already
        if not 0 <= prefix <= bits:
            problems.append(("prefix", f"expected a prefix length from 0 to {bits}, got {prefix}"))
    return problems


def _register_builtins() -> None:
    s, req = PropertyKind.STR, True
    register_resource_type(
        "ip_address",
        {
            "address": PropertySpec(s, req, check=_ip),
            "mode": PropertySpec(s, choices=("loopback", "interface"), default="loopback"),
            "interface": PropertySpec(s),
            "prefix": PropertySpec(PropertyKind.INT),
            "arp": PropertySpec(PropertyKind.BOOL),
        },
        check=_check_ip_address,
    )
    register_resource_type("network_name", {"name": PropertySpec(s, req, check=_non_empty)})
    register_resource_type(
        "disk",
        {"path": PropertySpec(s, req, check=_non_empty), "create": PropertySpec(PropertyKind.BOOL)},
    )
    register_resource_type(
        "process",
        {
            "command": PropertySpec(PropertyKind.COMMAND, req, check=_non_empty),
            "health_command": PropertySpec(PropertyKind.COMMAND, check=_non_empty),
            "tcp_check": PropertySpec(s, check=_host_port),
            "env": PropertySpec(PropertyKind.STR_LIST, check=_env_list),
            "health_timeout": PropertySpec(PropertyKind.FLOAT),
            "stop_timeout": PropertySpec(PropertyKind.FLOAT),
            "start_grace": PropertySpec(PropertyKind.FLOAT),
            "cwd": PropertySpec(s),
        },
    )


_register_builtins()
