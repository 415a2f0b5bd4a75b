"""`clustermail log` shows a malformed entry of the event log as a note, and goes on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clustermail.admin.cli import main
from clustermail.cluster import eventlog
from clustermail.coord import open_store


async def write_log(url: str) -> str:
    store = await open_store(url)
    try:
        await eventlog.append(store, eventlog.make("node1", "test", "before"))
        bad = eventlog.entry_key(eventlog.make("node2", "test", ""))
        await store.put(bad, b'{"time": "yesterday"}')
        await eventlog.append(store, eventlog.make("node1", "test", "after"))
    finally:
        await store.close()
    return bad


def test_log_shows_a_malformed_entry_as_a_note(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite://{tmp_path}/cluster.db"
    bad = asyncio.run(write_log(url))
    note = f"skipped a malformed log entry {bad}: field 'time': expected a number, got str"

    assert main(["log", "--store", url]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert text.index(" before ") < text.index(f" {note} ") < text.index(" after")

    assert main(["log", "--store", url, "--json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["node"], e["message"]) for e in entries] == [
        ("test", "node1", "before"), (eventlog.MALFORMED, "node2", note),
        ("test", "node1", "after")]
