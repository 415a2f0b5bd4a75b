from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.mail_fakes import DOMAIN, FakeDirectory, Running, start_smtp, three_users


@pytest.fixture
def directory() -> FakeDirectory:
    d = three_users()
    d.aliases[f"team@{DOMAIN}"] = [f"alice@{DOMAIN}", f"bob@{DOMAIN}"]
    d.aliases[f"al@{DOMAIN}"] = [f"alice@{DOMAIN}"]
    return d


@pytest.fixture
async def smtp(tmp_path: Path, directory: FakeDirectory) -> AsyncIterator[Running]:
    running = await start_smtp(tmp_path / "disk", directory)
    yield running
    await running.stop()
    running.mail_store.close()
