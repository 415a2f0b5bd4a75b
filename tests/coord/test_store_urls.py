"""Store URLs and the typed errors of opening a store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clustermail.coord import InvalidStoreURL, StoreUnavailable, open_store, parse_store_url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("cluster.db", "has no scheme"),
        ("sqlite://relative.db", "absolute file path"),
        ("sqlite:///", "absolute file path"),
        ("redis://127.0.0.1:6379", "unknown scheme 'redis'"),
        ("etcd://127.0.0.1", "is not host:port"),
        ("etcd://127.0.0.1:2379,:5", "is not host:port"),
        ("etcd://127.0.0.1:99999", "is not host:port"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(InvalidStoreURL, match=message):
        parse_store_url(url)


def test_good_urls() -> None:
    assert parse_store_url("sqlite:///var/lib/cm/cluster.db").path == Path(
        "/var/lib/cm/cluster.db"
    )
    assert parse_store_url("etcd://127.0.0.1:2379,localhost:22379").endpoints == (
        ("127.0.0.1", 2379),
        ("localhost", 22379),
    )


async def test_sqlite_in_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await open_store(f"sqlite://{tmp_path}/nowhere/cluster.db")


async def test_sqlite_on_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    junk = tmp_path / "cluster.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable, match=r"not a usable clustermail store|cannot open"):
        await open_store(f"sqlite://{junk}")
    assert junk.read_bytes().startswith(b"this is not a database")  # left untouched


async def test_unreachable_etcd_fails_promptly() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store = await open_store("etcd://127.0.0.1:1")
        try:
            await store.revision()
        finally:
            await store.close()
    assert time.monotonic() - started < 15
