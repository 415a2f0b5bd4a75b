"""The relay queue's record of finished recipients (real files)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from clustermail.mail.queue import finished as fin
from clustermail.mail.queue import store as qstore


def test_a_torn_last_line_is_ignored_and_rotation_keeps_the_older_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = fin.FinishedLog(tmp_path / "_queue")
    record.append([("Q1", "a@x", "local"), ("Q2", "b@y", "external")], time.time())
    size = (tmp_path / "_queue" / fin.FINISHED_FILE).stat().st_size
    monkeypatch.setattr(fin, "MAX_BYTES", size + 10)  # the next append rotates
    record.append([("Q3", "c@z", "vs:mail2")], time.time())
    record.append([("Q4", "d@z", "local")], time.time())
    record.close()
    with open(tmp_path / "_queue" / fin.FINISHED_FILE, "ab") as f:
        f.write(b'{"q": "Q5", "a"')  # a crash mid-write
    assert (tmp_path / "_queue" / (fin.FINISHED_FILE + ".1")).exists()
    assert [q for q, _, _ in fin.read_finished(tmp_path / "_queue")] == ["Q1", "Q2", "Q3",
                                                                         "Q4"]


def test_drop_finished_matches_queue_id_address_and_route(tmp_path: Path) -> None:
    conn = qstore.connect(tmp_path / "queue.sqlite")
    conn.isolation_level = None
    qstore.insert(conn, qstore.NewMessage("s@t", (
        qstore.NewRecipient("a@x", qstore.LOCAL),
        qstore.NewRecipient("b@y", qstore.EXTERNAL)), b"m", queue_id="Q1"), time.time())
    qstore.insert(conn, qstore.NewMessage("s@t", (
        qstore.NewRecipient("a@x", qstore.LOCAL),), b"m", queue_id="Q2"), time.time())
    record = fin.FinishedLog(tmp_path / "_queue")
    record.append([("Q1", "a@x", qstore.LOCAL), ("Q1", "b@y", "vs:other"),
                   ("Q2", "a@x", qstore.LOCAL), ("Q9", "z@z", qstore.LOCAL)], time.time())
    record.close()
    assert fin.drop_finished(conn, tmp_path / "_queue") == 2
    assert qstore.count(conn) == (1, 1)  # Q1's b@y went by another route: still due
    assert fin.drop_finished(conn, None) == 0
    conn.close()
    assert isinstance(conn, sqlite3.Connection)
