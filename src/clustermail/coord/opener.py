"""Opening the store a URL names: the backends are imported only when used (a SQLite
cluster never loads gRPC), from here rather than from ``url`` so parsing stays free of
backends and no import cycle runs through it."""

from __future__ import annotations

import importlib

from clustermail.coord.api import Store
from clustermail.coord.url import parse_store_url


async def open_store(url: str) -> Store:
    """Opens the store a URL names.

    Raises InvalidStoreURL, StoreCredentialsError (a credential file is unusable,
    or the store refused our certificate or password) or StoreUnavailable."""
    parsed = parse_store_url(url)
    if parsed.scheme == "sqlite":
        from clustermail.coord.sqlite import SqliteStore

        assert parsed.path is not None
        return await SqliteStore.open(parsed.path)
    from clustermail.coord.etcd import EtcdStore
    from clustermail.coord.etcd_credentials import load_credentials

    credentials = load_credentials(parsed.options) if parsed.tls else None
    return await EtcdStore.connect(parsed.endpoints, credentials=credentials,
                                   url=str(parsed))


#: The backend modules by URL scheme (what :func:`open_store` imports).
BACKEND_MODULES = {"sqlite": ("clustermail.coord.sqlite",),
                   "etcd": ("clustermail.coord.etcd", "clustermail.coord.etcd_credentials"),
                   "etcds": ("clustermail.coord.etcd", "clustermail.coord.etcd_credentials")}


def preload_backend(scheme: str) -> None:
    """Imports the backend of ``scheme`` ahead of :func:`open_store`: a warm spare
    resource host does, since etcd's (gRPC) takes ~0.1 s that a failover would wait
    for otherwise. An unknown scheme is left for ``open_store`` to refuse."""
    for module in BACKEND_MODULES.get(scheme, ()):
        importlib.import_module(module)
