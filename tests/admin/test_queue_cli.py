"""`clustermail queue list|retry|delete` and `clustermail track` on a local data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clustermail.admin.cli import main
from clustermail.mail.queue import store as qstore
from clustermail.mail.queue.tracking import TrackingLog


def make_queue(data: Path) -> list[str]:
    conn = qstore.connect(qstore.queue_path(data / "disks" / "mail1"))
    ids = []
    for i in range(3):
        msg = qstore.NewMessage(
            f"s{i}@x.test", (qstore.NewRecipient(f"r{i}@y.test", qstore.EXTERNAL),),
            b"Subject: x\r\n\r\nbody\r\n", f"<m{i}@t>",
        )
        qstore.insert(conn, msg, 1000.0 + i)
        ids.append(msg.queue_id)
    conn.execute("UPDATE recipient SET next_attempt = 4e9, attempts = 2, last_error = 'nope'")
    conn.close()
    return ids


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_retry_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path)
    ids = make_queue(tmp_path)
    code, out, _ = run(capsys, "queue", "list", "mail1", "--data", data, "--json")
    assert code == 0
    listed = json.loads(out)
    assert [m["queue_id"] for m in listed] == ids
    assert listed[0]["recipients"][0]["attempts"] == 2
    code, out, _ = run(capsys, "queue", "retry", "mail1", ids[0], "--data", data)
    assert code == 0 and "1 recipients" in out
    code, out, _ = run(capsys, "queue", "delete", "mail1", ids[1], "--data", data)
    assert code == 0 and "1 messages deleted" in out
    code, out, _ = run(capsys, "queue", "list", "mail1", "--data", data, "--json")
    listed = json.loads(out)
    assert [m["queue_id"] for m in listed] == [ids[0], ids[2]]
    assert listed[0]["recipients"][0]["next_attempt_in"] == 0
    code, out, _ = run(capsys, "queue", "list", "mail1", "--data", data)
    assert code == 0 and "queue of mail1 (2 messages)" in out


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "queue", "list", "mail7", "--data", str(tmp_path))
    assert code == 1 and err.startswith("clustermail: no queue for virtual server 'mail7'")
    make_queue(tmp_path)
    code, _, err = run(capsys, "queue", "delete", "mail1", "--data", str(tmp_path))
    assert code == 1 and "--all" in err


def test_track_searches_every_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for vs in ("mail1", "mail2"):
        log = TrackingLog(tmp_path / "disks" / vs, vs)
        log.record("receive", queue_id="Q1", message_id="<m1@t>", sender="a@x.test",
                   recipients=["b@y.test"], size=10, result="2.0.0")
        log.record("receive", queue_id="Q2", message_id="<m2@t>", sender="c@x.test",
                   recipients=["d@y.test"], size=10, result="2.0.0")
        log.close()
    (tmp_path / "disks" / "mail1" / "tracking" / "torn.jsonl").write_text('{"time": 1, "ev')
    code, out, _ = run(capsys, "track", "--message-id", "m1@t", "--data", str(tmp_path),
                       "--json")
    found = json.loads(out)
    assert code == 0 and sorted(e["vs"] for e in found) == ["mail1", "mail2"]
    code, out, _ = run(capsys, "track", "--recipient", "D@y.test", "--vs", "mail2",
                       "--data", str(tmp_path), "--json")
    assert [e["queue_id"] for e in json.loads(out)] == ["Q2"]
    code, out, _ = run(capsys, "track", "--sender", "a@x.test", "--data", str(tmp_path))
    assert code == 0 and "2 entries" in out
