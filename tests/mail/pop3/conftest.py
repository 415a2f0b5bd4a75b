"""Fixtures of the POP3 tests: the three-user directory and a running service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.mail_fakes import FakeDirectory, three_users
from tests.support.pop3_service import Pop3, start_pop3


@pytest.fixture
def directory() -> FakeDirectory:
    return three_users()


@pytest.fixture
async def pop3(tmp_path: Path, directory: FakeDirectory) -> AsyncIterator[Pop3]:
    p = await start_pop3(tmp_path / "disk", directory)
    yield p
    await p.service.stop()
    p.mail_store.close()
