"""End-to-end fixtures: each test gets its own store (a fresh etcd for the etcd backend).

Every test in this folder is marked ``e2e`` (`pytest -m "not e2e"` leaves them out; the
root conftest marks them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcd_server import EtcdCluster


@pytest.fixture(params=["sqlite", "etcd"])
def cluster_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/cluster.db"
        return
    etcd = EtcdCluster.start(tmp_path / "etcd", members=1)
    try:
        yield etcd.url
    finally:
        etcd.stop()
