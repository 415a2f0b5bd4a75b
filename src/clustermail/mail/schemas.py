"""Property schemas of the mail layer's resource types, for configuration validation.

Imported by the admin layer (the CLI, which also runs `node run`) before any
configuration is parsed, so a cluster file may use these types. The cluster
layer never imports the mail layer; it only looks types up in its registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import (
    PropertyKind,
    PropertySpec,
    register_resource_type,
)
from clustermail.mail.imap.idle_timeout import check_idle_timeout


def _subdirectory(value: PropertyValue) -> str | None:
    path = PurePosixPath(str(value))
    if not str(value) or path.is_absolute() or ".." in path.parts:
        return 'a subdirectory of the disk, such as "mail"'
    return None


def _positive_int(value: PropertyValue) -> str | None:
    return "an integer >= 1" if not isinstance(value, int) or value < 1 else None


def _bytes(value: PropertyValue) -> str | None:
    return "a number of bytes >= 0" if not isinstance(value, int) or value < 0 else None


def _days(value: PropertyValue) -> str | None:
    return "a number of days >= 0" if not isinstance(value, int | float) or value < 0 else None


register_resource_type(
    "mail_store",
    {
        "path": PropertySpec(PropertyKind.STR, check=_subdirectory),
        "max_message_size": PropertySpec(PropertyKind.INT, check=_positive_int),
        "quota_warning": PropertySpec(PropertyKind.INT, check=_bytes),
        "quota_prohibit_send": PropertySpec(PropertyKind.INT, check=_bytes),
        "quota_prohibit_send_receive": PropertySpec(PropertyKind.INT, check=_bytes),
        "retention_days": PropertySpec(PropertyKind.FLOAT, check=_days),
    },
)


def _port(value: PropertyValue) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
    return None if ok else "a port from 1 to 65535 (0 turns the listener off)"


def _above_zero(value: PropertyValue) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return None if ok else "a number greater than 0"


def _host_port(value: PropertyValue) -> str | None:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return '"host:port", such as "smtp.example.net:587"'
    return None


def _tls_pair(props: Mapping[str, PropertyValue]) -> list[tuple[str, str]]:
    cert, key = props.get("cert"), props.get("key")
    if (cert is None) != (key is None):
        return [("cert" if cert is None else "key", "give both cert and key, or neither")]
    return []


_I, _F, _S, _B = PropertyKind.INT, PropertyKind.FLOAT, PropertyKind.STR, PropertyKind.BOOL
_COMMON = {
    "hostname": PropertySpec(_S),
    "cert": PropertySpec(_S),
    "key": PropertySpec(_S),
    "timeout": PropertySpec(_F, check=_above_zero),
    "max_connections": PropertySpec(_I, check=_above_zero),
    "max_connections_per_client": PropertySpec(_I, check=_above_zero),
    "allow_plaintext_on_loopback": PropertySpec(_B),
}

register_resource_type(
    "smtp",
    {
        **_COMMON,
        "port": PropertySpec(_I, check=_port),
        "submission_port": PropertySpec(_I, check=_port),
        "submissions_port": PropertySpec(_I, check=_port),
        "message_size_limit": PropertySpec(_I, check=_above_zero),
        "max_recipients": PropertySpec(_I, check=_above_zero),
        "smart_host": PropertySpec(_S, check=_host_port),
        "retry_base": PropertySpec(_F, check=_above_zero),
        "retry_max": PropertySpec(_F, check=_above_zero),
        "delay_notice_after": PropertySpec(_F, check=_above_zero),
        "expire_after": PropertySpec(_F, check=_above_zero),
        "queue_poll": PropertySpec(_F, check=_above_zero),
    },
    check=_tls_pair,
)
register_resource_type(
    "pop3",
    {
        **_COMMON,
        "port": PropertySpec(_I, check=_port),
        "tls_port": PropertySpec(_I, check=_port),
    },
    check=_tls_pair,
)
register_resource_type(
    "imap4",
    {
        **{k: v for k, v in _COMMON.items() if k != "timeout"},  # idle_timeout instead
        "port": PropertySpec(PropertyKind.INT, default=143, check=_port),
        "tls_port": PropertySpec(PropertyKind.INT, default=993, check=_port),
        "allow_plaintext_on_loopback": PropertySpec(PropertyKind.BOOL, default=False),
        "idle_timeout": PropertySpec(PropertyKind.FLOAT, check=check_idle_timeout),
    },
    check=_tls_pair,
)
