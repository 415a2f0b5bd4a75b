"""Store URLs select the backend: ``sqlite:///path/cluster.db`` or ``etcd://h:p[,h:p…]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clustermail.coord.api import InvalidStoreURL, Store

SCHEMES = ("sqlite", "etcd")


@dataclass(frozen=True, slots=True)
class StoreURL:
    scheme: str
    #: For sqlite: the database file.
    path: Path | None = None
    #: For etcd: (host, port) of each endpoint, in order of preference.
    endpoints: tuple[tuple[str, int], ...] = ()


def parse_store_url(url: str) -> StoreURL:
    """Parses a store URL, raising :class:`InvalidStoreURL` with what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidStoreURL(
            f"store URL {url!r} has no scheme: use sqlite:///path/to/cluster.db "
            "or etcd://host:port[,host:port...]"
        )
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise InvalidStoreURL(
                f"store URL {url!r}: a sqlite URL needs an absolute file path, "
                "as in sqlite:///path/to/cluster.db"
            )
        return StoreURL("sqlite", path=Path(rest))
    if scheme == "etcd":
        endpoints: list[tuple[str, int]] = []
        for part in rest.rstrip("/").split(","):
            host, colon, port = part.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidStoreURL(
                    f"store URL {url!r}: endpoint {part!r} is not host:port "
                    "(as in etcd://127.0.0.1:2379,127.0.0.1:22379)"
                )
            endpoints.append((host.strip("[]"), int(port)))
        return StoreURL("etcd", endpoints=tuple(endpoints))
    raise InvalidStoreURL(
        f"store URL {url!r}: unknown scheme {scheme!r} (expected one of: {', '.join(SCHEMES)})"
    )


async def open_store(url: str) -> Store:
    """Opens the store a URL names. Raises InvalidStoreURL or StoreUnavailable."""
    parsed = parse_store_url(url)
    if parsed.scheme == "sqlite":
        from clustermail.coord.sqlite import SqliteStore

        assert parsed.path is not None
        return await SqliteStore.open(parsed.path)
    from clustermail.coord.etcd import EtcdStore

    return await EtcdStore.connect(parsed.endpoints)
