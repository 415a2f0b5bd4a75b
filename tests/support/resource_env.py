"""Resources built by hand, outside a resource host: a context, a group view, a log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clustermail.cluster.resources import Properties, Resource, ResourceContext
from clustermail.cluster.resources.base import StoreHandle


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def debug(self, message: str, **fields: object) -> None:
        self.lines.append(("debug", message))

    def info(self, message: str, **fields: object) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str, **fields: object) -> None:
        self.lines.append(("warning", message))

    def error(self, message: str, **fields: object) -> None:
        self.lines.append(("error", message))


class Group:
    """A minimal GroupView: resources by name, with their types and dependencies."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, Resource, tuple[str, ...]]] = {}

    def resource(self, name: str) -> Resource:
        return self.items[name][1]

    def type_of(self, name: str) -> str:
        return self.items[name][0]

    def names(self) -> tuple[str, ...]:
        return tuple(self.items)

    def dependencies_of(self, name: str) -> tuple[str, ...]:
        return self.items[name][2]


class Env:
    def __init__(self, tmp: Path, epoch: int = 7, vs: str = "mail1") -> None:
        self.tmp, self.epoch, self.vs = tmp, epoch, vs
        self.store = StoreHandle(f"sqlite://{tmp}/cluster.db")
        self.group = Group()
        self.logs = Logs()

    def make(
        self, cls: type[Resource], name: str, props: dict[str, Any], deps: tuple[str, ...] = ()
    ) -> Any:
        ctx = ResourceContext(
            vs=self.vs, node="node1", epoch=self.epoch, data_dir=self.tmp / "data",
            store_url=self.store.url, resource=name, type_name=cls.type_name, log=self.logs,
            _store=self.store, _group=self.group,
        )
        resource = cls(ctx, Properties(props, name))
        self.group.items[name] = (cls.type_name, resource, deps)
        return resource
