"""The CLI pieces the lead hooks into ``clustermail``: parsing and runners on a real disk."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clustermail.admin import backup_cli
from clustermail.admin.errors import AdminError
from tests.mail.backup.support import A, msg, new_store


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    backup_cli.add_backup_create_arguments(sub.add_parser("create"))
    backup_cli.add_backup_dir_arguments(sub.add_parser("list"))
    backup_cli.add_restore_arguments(sub.add_parser("restore"))
    return p


def test_create_list_restore_from_parsed_arguments(tmp_path: Path) -> None:
    disk, backups = tmp_path / "disk", tmp_path / "backups"
    store = new_store(disk / "mail")
    store.database("SG1", "DB1").deliver_sync(msg("a"), [A])
    doc, text = backup_cli.run_backup_create(parser().parse_args(["create", "vs1"]), disk,
                                             backups, 3)
    assert text == doc["id"] and doc["kind"] == "full" and doc["databases"]["SG1/DB1"] > 0
    listed, lines = backup_cli.run_backup_list(parser().parse_args(["list"]), backups)
    assert doc["id"] in lines and listed["chains"][0]["chain"] == doc["id"]
    store.dismount()
    args = parser().parse_args(["restore", "vs1", "SG1/DB1", "--from", doc["id"],
                                "--recovery", "--until", "2100-01-01T00:00"])
    restored, out = backup_cli.run_restore(args, disk, backups)
    assert "restored SG1/DB1" in out and restored["restored"][0]["stopped"] is None
    with pytest.raises(AdminError, match="SG/DB or --all"):
        backup_cli.run_restore(parser().parse_args(["restore", "vs1", "--from", "x"]), disk,
                               backups)
    with pytest.raises(AdminError, match="no backup 'nope'"):
        backup_cli.run_restore(parser().parse_args(
            ["restore", "vs1", "SG1/DB1", "--from", "nope"]), disk, backups)
    with pytest.raises(AdminError, match="not a time"):
        backup_cli.parse_time("yesterday")
