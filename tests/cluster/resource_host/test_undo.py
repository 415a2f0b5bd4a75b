"""Undo records: written before a change to the machine, run by whoever outlives the host."""

from __future__ import annotations

from pathlib import Path

from clustermail.cluster import undo


def test_a_record_runs_once_and_only_for_its_node(tmp_path: Path) -> None:
    marker = tmp_path / "reverted"
    undo.record(tmp_path, "node1", "mail1", "ip", ["sh", "-c", f"echo x >> {marker}"],
                "address 10.0.0.1 on eth0")
    assert undo.run_pending(tmp_path, "node2") == []  # another node's record
    done = undo.run_pending(tmp_path, "node1")
    assert done == [undo.Undone("mail1", "ip", "address 10.0.0.1 on eth0", None)]
    assert marker.read_text() == "x\n"
    assert undo.run_pending(tmp_path, "node1") == []  # gone once it worked
    assert marker.read_text() == "x\n"


def test_clear_forgets_a_cleanly_reverted_change(tmp_path: Path) -> None:
    undo.record(tmp_path, "node1", "mail1", "ip", ["false"], "something")
    undo.clear(tmp_path, "node1", "mail1", "ip")
    assert undo.run_pending(tmp_path, "node1") == []


def test_a_failed_undo_is_kept_for_the_next_chance(tmp_path: Path) -> None:
    undo.record(tmp_path, "node1", "mail1", "ip", ["sh", "-c", "echo busy >&2; exit 2"], "addr")
    undo.record(tmp_path, "node1", "mail2", "ip",
                ["sh", "-c", "echo 'Error: ipv4: Address not found.' >&2; exit 2"], "other",
                already_done=("Address not found",))
    done = undo.run_pending(tmp_path, "node1")
    assert [(u.vs, u.error) for u in done] == [("mail1", "busy"), ("mail2", None)]
    assert [u.vs for u in undo.run_pending(tmp_path, "node1")] == ["mail1"]  # still there
    assert [u.vs for u in undo.run_pending(tmp_path, "node1", "mail2")] == []


def test_only_the_named_virtual_server(tmp_path: Path) -> None:
    for vs in ("mail1", "mail2"):
        undo.record(tmp_path, "node1", vs, "ip", ["true"], vs)
    assert [u.vs for u in undo.run_pending(tmp_path, "node1", "mail2")] == ["mail2"]
    assert [u.vs for u in undo.run_pending(tmp_path, "node1")] == ["mail1"]


def test_an_unreadable_record_is_reported_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / undo.UNDO_DIR / "node1" / "mail1" / "ip.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    (done,) = undo.run_pending(tmp_path, "node1")
    assert done.error is not None and "unreadable" in done.error
    assert not path.exists()


def test_a_command_that_hangs_is_stopped(tmp_path: Path) -> None:
    undo.record(tmp_path, "node1", "mail1", "ip", ["sleep", "30"], "slow")
    (done,) = undo.run_pending(tmp_path, "node1", timeout=0.2)
    assert done.error is not None and "timed out" in done.error


def test_a_record_another_runner_just_took_is_skipped(tmp_path: Path) -> None:
    # The agent and a host can look at the same record at once: whoever comes second
    # finds it gone and reports nothing (running the command twice is harmless anyway).
    missing = tmp_path / undo.UNDO_DIR / "node1" / "mail1" / "ip.json"
    assert undo._run("mail1", missing, 1.0) is None


def test_a_record_is_private(tmp_path: Path) -> None:
    undo.record(tmp_path, "node1", "mail1", "ip", ["true"], "addr")
    path = tmp_path / undo.UNDO_DIR / "node1" / "mail1" / "ip.json"
    assert path.stat().st_mode & 0o777 == 0o600
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert folder.stat().st_mode & 0o777 == 0o700


def test_a_record_others_could_write_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    undo.record(tmp_path, "node1", "mail1", "ip", ["touch", str(marker)], "addr")
    path = tmp_path / undo.UNDO_DIR / "node1" / "mail1" / "ip.json"
    path.chmod(0o666)
    (done,) = undo.run_pending(tmp_path, "node1")
    assert done.error is not None and "refusing to run" in done.error
    assert "writable by group or others (mode 0666)" in done.error
    assert not marker.exists() and path.exists()  # kept, for the administrator to look at
