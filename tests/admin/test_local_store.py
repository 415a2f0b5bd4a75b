"""Which store a data directory's cluster lives in (`up --store`, `up --etcd`, the record)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clustermail.admin import local_store
from clustermail.admin.errors import AdminError
from clustermail.admin.local_store import StoreChoice


def test_a_new_directory_runs_on_its_embedded_store(tmp_path: Path) -> None:
    choice = local_store.choose(tmp_path, None, None)
    assert choice == StoreChoice(f"sqlite://{tmp_path.resolve() / 'cluster.db'}")
    assert local_store.default_url(tmp_path) == choice.url
    assert not local_store.has_cluster(tmp_path)


def test_the_recorded_store_is_the_default_of_later_commands(tmp_path: Path) -> None:
    choice = local_store.choose(tmp_path, "etcd://127.0.0.1:2379,127.0.0.1:22379", None)
    local_store.record(tmp_path, choice)
    assert (tmp_path / "store.json").stat().st_mode & 0o777 == 0o600
    assert local_store.has_cluster(tmp_path)
    assert local_store.default_url(tmp_path) == "etcd://127.0.0.1:2379,127.0.0.1:22379"
    assert local_store.choose(tmp_path, None, None) == choice  # plain `up` again
    assert local_store.choose(tmp_path, choice.url, None) == choice


def test_etcds_options_reach_the_nodes(tmp_path: Path) -> None:
    url = "etcds://10.0.0.1:2379?ca=/etc/ca.pem&user=mail&password_file=/etc/pw"
    choice = local_store.choose(tmp_path, url, None)
    assert choice.url == "etcds://10.0.0.1:2379?ca=/etc/ca.pem&user=mail&password_file=/etc/pw"


def test_a_data_directory_is_not_switched_to_another_store(tmp_path: Path) -> None:
    local_store.record(tmp_path, StoreChoice("etcd://127.0.0.1:2379"))
    with pytest.raises(AdminError, match=re.escape("holds the cluster of etcd://127.0.0.1:2379")):
        local_store.choose(tmp_path, "etcd://127.0.0.1:3379", None)
    with pytest.raises(AdminError, match="another --data directory for the private etcd"):
        local_store.choose(tmp_path, None, "etcd://127.0.0.1:23800")


def test_the_private_etcd_is_the_same_store_on_any_ports(tmp_path: Path) -> None:
    local_store.record(tmp_path, StoreChoice("etcd://127.0.0.1:23800", private_etcd=True))
    again = local_store.choose(tmp_path, None, "etcd://127.0.0.1:23800")
    assert again.private_etcd


def test_a_bad_url_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="is not host:port"):
        local_store.choose(tmp_path, "etcd://nowhere", None)
    with pytest.raises(AdminError, match="never put a password"):
        local_store.choose(tmp_path, "etcds://h:1?password=x", None)


async def test_an_unreachable_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="nothing was started"):
        await local_store.connect(StoreChoice("sqlite:///nonexistent-folder/x/cluster.db"))
