"""Property schemas of the mail layer's resource types, for configuration validation.

Imported by the admin layer (the CLI, which also runs `node run`) before any
configuration is parsed, so a cluster file may use these types. The cluster
layer never imports the mail layer; it only looks types up in its registry.
"""

from __future__ import annotations

from clustermail.cluster.resource_schema import (
    PropertyKind,
    PropertySpec,
    register_resource_type,
)


def _port(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 65536:
        return None
    return "a port number from 0 to 65535"


register_resource_type(
    "imap4",
    {
        "port": PropertySpec(PropertyKind.INT, default=143, check=_port),
        "tls_port": PropertySpec(PropertyKind.INT, default=993, check=_port),
        "allow_plaintext_on_loopback": PropertySpec(PropertyKind.BOOL, default=False),
        "idle_timeout": PropertySpec(PropertyKind.FLOAT),
    },
)
