"""Fixtures shared by the whole suite: real backends of the coordination store."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clustermail import eventloop
from clustermail.coord import Store, open_store
from tests.support.etcd_server import EtcdCluster

#: Fixtures defined beside the helpers they drive, for every test package.
pytest_plugins = ["tests.support.distributions", "tests.support.hostproc"]

BACKENDS = ["sqlite", "etcd"]


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """In-process tests run on the loop the resource host runs (:mod:`clustermail.eventloop`;
    ``CLUSTERMAIL_EVENT_LOOP=asyncio`` for the standard one)."""
    if eventloop.loop_factory() is None:
        return asyncio.DefaultEventLoopPolicy()
    import uvloop

    policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return policy


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """Tests that run the CLI's ``main`` in-process get its ``umask 077``; give every
    test the umask the suite started with (a reference server that runs as another
    user must be able to read the files its fixture writes)."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real single-member etcd for the session; tests isolate by key prefix."""
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"), members=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/cluster.db"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return cluster.url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def ns() -> str:
    """A key prefix of this test's own, so tests can share one etcd server."""
    return f"/test/{uuid.uuid4().hex[:12]}/"
