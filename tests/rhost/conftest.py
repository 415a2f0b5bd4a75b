"""Fixtures of the resource host tests: real host processes, stopped by pid afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rhost.hostproc import Host, kill_if_ours

StartHost = Callable[[dict[str, Any]], Host]


@pytest.fixture
def start_host(tmp_path: Path) -> Iterator[StartHost]:
    """Starts resource hosts; each is killed (with its children) at teardown."""
    started: list[Host] = []

    def start(spec: dict[str, Any]) -> Host:
        host = Host(spec, tmp_path / f"host-{len(started)}.stderr")
        started.append(host)
        return host

    yield start
    for host in started:
        host.kill()


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids to SIGKILL (with their process groups) at teardown, if still ours."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        kill_if_ours(pid, group=True)
