"""What `up` checks before starting: the addresses and ports of the virtual servers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from clustermail.admin import preflight, sample_cluster
from clustermail.admin.errors import AdminError
from clustermail.cluster.config import config_from_dict
from tests.e2e.harness import cluster_toml, free_addresses


def test_the_sample_cluster_listens_on_every_mail_port_of_each_address() -> None:
    found = preflight.endpoints(sample_cluster.sample_config())
    # Every mail port on each virtual server's address, and the admin service's HTTP
    # and HTTPS ports on the cluster group's.
    assert len(found) == 3 * len(sample_cluster.PORTS) + 2
    assert preflight.Endpoint("127.0.0.10", 8080) in found
    assert preflight.Endpoint("127.0.0.12", 2525) in found
    assert preflight.Endpoint("127.0.0.13", 2995) in found


def test_a_process_resources_tcp_check_is_an_endpoint(tmp_path: Path) -> None:
    import tomllib

    base, port = free_addresses()
    config = config_from_dict(tomllib.loads(cluster_toml(base, port)), "test")
    assert preflight.Endpoint(f"{base}.11", port) in preflight.endpoints(config)


def test_a_held_port_is_named_with_its_holder(tmp_path: Path) -> None:
    import tomllib

    base, port = free_addresses()
    config = config_from_dict(tomllib.loads(cluster_toml(base, port)), "test")
    preflight.check_ports(config, tmp_path / "cluster.toml")  # all free
    with socket.socket() as stray:
        stray.bind((f"{base}.12", port))
        stray.listen()
        assert preflight.in_use(preflight.Endpoint(f"{base}.12", port))
        with pytest.raises(AdminError) as caught:
            preflight.check_ports(config, tmp_path / "cluster.toml")
    text = str(caught.value)
    assert text.startswith(f"{base}.12:{port} is in use by pid {os.getpid()} (")
    assert f"`kill {os.getpid()}`" in text and str(tmp_path / "cluster.toml") in text


def test_an_address_the_machine_lacks_is_not_in_use() -> None:
    # 192.0.2.0/24 is for documentation: no interface here has it (the ip_address
    # resource would bring it up).
    assert not preflight.in_use(preflight.Endpoint("192.0.2.7", 2525))
