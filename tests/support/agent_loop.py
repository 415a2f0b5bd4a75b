"""The loop for tests that run a node agent in-process: asyncio's own, as `node run` has it
(only the resource host runs uvloop, see clustermail.eventloop). A module uses it with
``from tests.support.agent_loop import event_loop_policy``."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    return asyncio.DefaultEventLoopPolicy()
