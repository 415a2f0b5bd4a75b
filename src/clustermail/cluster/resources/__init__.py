"""Resource types (the resource DLLs a resource host runs) and what they are built from.

The generic types live here: ``ip_address``, ``network_name``, ``disk`` and
``process``. Each module defines a :class:`Resource` subclass and, next to it,
its :class:`~clustermail.cluster.resource_schema.ResourceType`; the type is
found through its entry point (:mod:`clustermail.cluster.resource_types`), the
same way as the types of the mail layer or of a third party.
"""

from __future__ import annotations

from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)

__all__ = [
    "Properties",
    "PropertyError",
    "Resource",
    "ResourceContext",
    "ResourceError",
]
