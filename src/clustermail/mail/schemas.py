"""Property schemas of the mail layer's resource types, for configuration validation.

Imported by the admin layer (the CLI, which also runs `node run`) before any
configuration is parsed, so a cluster file may use these types. The cluster
layer never imports the mail layer; it only looks types up in its registry.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, register_resource_type


def _subdirectory(value: PropertyValue) -> str | None:
    path = PurePosixPath(str(value))
    if not str(value) or path.is_absolute() or ".." in path.parts:
        return 'a subdirectory of the disk, such as "mail"'
    return None


def _positive(value: PropertyValue) -> str | None:
    return "an integer >= 1" if not isinstance(value, int) or value < 1 else None


def _bytes(value: PropertyValue) -> str | None:
    return "a number of bytes >= 0" if not isinstance(value, int) or value < 0 else None


def _days(value: PropertyValue) -> str | None:
    return "a number of days >= 0" if not isinstance(value, int | float) or value < 0 else None


register_resource_type(
    "mail_store",
    {
        "path": PropertySpec(PropertyKind.STR, check=_subdirectory),
        "max_message_size": PropertySpec(PropertyKind.INT, check=_positive),
        "quota_warning": PropertySpec(PropertyKind.INT, check=_bytes),
        "quota_prohibit_send": PropertySpec(PropertyKind.INT, check=_bytes),
        "quota_prohibit_send_receive": PropertySpec(PropertyKind.INT, check=_bytes),
        "retention_days": PropertySpec(PropertyKind.FLOAT, check=_days),
    },
)
