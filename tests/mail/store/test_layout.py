"""The layout of a virtual server's disk: storage groups and databases, limits, mounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clustermail.mail.store import LayoutError, LimitExceededError, Limits, MailStore
from clustermail.mail.store.layout import LAYOUT_FILE, Layout, default_layout
from tests.support.mail_data import message


def test_default_layout_is_recorded_on_the_disk(tmp_path: Path) -> None:
    store = MailStore(tmp_path / "disk")
    assert [(d.storage_group, d.name) for d in store.list_databases()] == [("SG1", "DB1")]
    recorded = json.loads((tmp_path / "disk" / LAYOUT_FILE).read_text())
    assert recorded["storage_groups"] == [{"name": "SG1", "databases": ["DB1"]}]
    assert recorded["limits"] == {"storage_groups": 4, "databases_per_group": 5}


def test_exchange_limits_four_groups_of_five(tmp_path: Path) -> None:
    store = MailStore(tmp_path)
    for sg in ("SG2", "SG3", "SG4"):
        store.add_storage_group(sg)
    with pytest.raises(LimitExceededError, match="4 storage groups"):
        store.add_storage_group("SG5")
    for db in ("DB2", "DB3", "DB4", "DB5"):
        store.add_database("SG1", db)
    with pytest.raises(LimitExceededError, match="5 databases"):
        store.add_database("SG1", "DB6")
    store.add_database("SG2", "DB2")
    with pytest.raises(LayoutError, match="already"):
        store.add_database("SG2", "db2")  # names are case-insensitive (the disk may be)
    with pytest.raises(LayoutError, match="invalid"):
        store.add_storage_group("../evil")
    reopened = MailStore(tmp_path, create=False)
    assert len(reopened.list_databases()) == 6


def test_configurable_limits(tmp_path: Path) -> None:
    store = MailStore(tmp_path, limits=Limits(storage_groups=1, databases_per_group=2))
    store.add_database("SG1", "DB2")
    with pytest.raises(LimitExceededError):
        store.add_storage_group("SG2")
    store.set_limits(Limits(storage_groups=2, databases_per_group=2))
    store.add_storage_group("SG2")
    with pytest.raises(LimitExceededError):
        store.set_limits(Limits(storage_groups=1))


def test_mount_all_and_add_while_mounted(tmp_path: Path) -> None:
    store = MailStore(tmp_path)
    infos = store.mount(3)
    assert [i.epoch for i in infos] == [3] and infos[0].seconds < 5
    db = store.database("SG1", "DB1")
    db.create_mailbox_sync("a@x.test")
    db.deliver_sync(message(1), ["a@x.test"])
    store.add_storage_group("SG2")
    added = store.add_database("SG2", "DB1")
    assert added.mounted and added.epoch == 3
    assert store.find_mailbox("a@x.test") is db
    store.dismount()
    assert not db.mounted
    again = MailStore(tmp_path, create=False)
    again.mount(4)
    assert again.database("SG1", "DB1").status("a@x.test", "INBOX").messages == 1
    again.dismount()


def test_bad_layout_files(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="not a mail store disk"):
        MailStore(tmp_path, create=False)
    (tmp_path / LAYOUT_FILE).write_text("{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        MailStore(tmp_path)
    (tmp_path / LAYOUT_FILE).write_text(json.dumps({"version": 1, "storage_groups": [{"name": 3}]}))
    with pytest.raises(LayoutError, match=r"storage_groups\[0\]"):
        MailStore(tmp_path)
    with pytest.raises(LayoutError, match="positive integer"):
        Limits(storage_groups=0)


def test_layout_round_trip() -> None:
    layout = default_layout().with_storage_group("SG2").with_database("SG2", "Archive-1")
    assert Layout.from_json(layout.to_json(), "x") == layout
    with pytest.raises(LayoutError, match="no storage group"):
        layout.with_database("SG9", "DB1")
