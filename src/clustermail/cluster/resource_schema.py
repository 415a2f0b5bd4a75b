"""What a resource type declares: its property schema and its implementation (data only).

A resource type is one :class:`ResourceType` object, defined next to its
:class:`~clustermail.cluster.resources.base.Resource` subclass and declared
once as an entry point of the ``clustermail.resource_types`` group (see
:mod:`clustermail.cluster.resource_types`). Configuration validation reads its
property schema; the resource host builds its class.

String properties may hold the placeholders ``{data}`` (the node's data
directory) and ``{python}`` (the interpreter); the node agent expands them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from clustermail.cluster.model import PropertyValue

if TYPE_CHECKING:  # the implementation is I/O code; this module stays pure
    from clustermail.cluster.resources.base import Resource


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


def non_empty(value: PropertyValue) -> str | None:
    """A :attr:`PropertySpec.check` for values that must not be empty."""
    return "a non-empty value" if value in ("", ()) else None


# Cross-property rules of one type: (property, message) for each problem.
TypeCheck = Callable[[Mapping[str, PropertyValue]], Sequence[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One resource type: its name, the class the resource host builds, the
    properties a configuration may give it, and its cross-property rules."""

    name: str
    resource: type[Resource] = field(compare=False)
    properties: Mapping[str, PropertySpec] = field(default_factory=dict)
    check: TypeCheck | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"{self.resource.__name__}: a resource type needs a name")
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))
        # The class learns its type name here, once, so its errors can say it
        # ("needs a dependency of type ip_address"); one class serves one type.
        current = getattr(self.resource, "type_name", "")
        if current and current != self.name:
            raise ValueError(
                f"{self.resource.__name__} is already the resource type {current!r}, "
                f"not {self.name!r}"
            )
        self.resource.type_name = self.name
