"""Fixtures shared by the whole suite: real backends of the coordination store."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from clustermail import eventloop
from clustermail.coord import Store, open_store
from tests.support.etcd_server import EtcdCluster

#: Fixtures defined beside the helpers they drive, for every test package.
pytest_plugins = ["tests.support.distributions", "tests.support.hostproc"]

BACKENDS = ["sqlite", "etcd"]
#: Tests that start a whole cluster of processes (node agents, or etcd members): marked
#: ``e2e`` here, and run one at a time on one pytest-xdist worker (below).
E2E_PATHS = ("tests/e2e/", "tests/coord/test_etcd_cluster.py")


def _is_e2e(nodeid: str) -> bool:
    return nodeid.startswith(E2E_PATHS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_e2e(item.nodeid):
            item.add_marker(pytest.mark.e2e)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test`` runs two pytest-xdist workers: every ``e2e`` test goes to one of
    them, one after another, while the other worker (and then both) run the rest. Two
    clusters at once on two cores would time each other's failovers out; one cluster
    beside in-process tests does not. (xdist's own ``--dist loadgroup`` cannot group by a
    marker added at collection on pytest 9.2: it rewrites a node id pytest no longer
    reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class E2EApart(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no type hints
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if _is_e2e(nodeid) else nodeid

    return E2EApart(config, log)


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
