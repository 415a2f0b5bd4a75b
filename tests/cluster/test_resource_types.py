"""The resource type registry: entry points, ours and a third party's, and clear errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from clustermail.cluster import resource_types
from clustermail.cluster.config import ConfigError, config_from_dict
from clustermail.cluster.resource_types import ResourceTypeError, UnknownResourceType
from clustermail.cluster.resources.process import PROCESS_TYPE
from clustermail.cluster.toml_render import render_toml
from tests.cluster.resource_host import plugin_example
from tests.support.banner_cluster import banner_cluster_config
from tests.support.distributions import Distributions

OURS = ["disk", "imap4", "ip_address", "mail_store", "network_name", "pop3", "process", "smtp"]


def with_echo(properties: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(banner_cluster_config().to_dict())
    data["virtual_servers"]["mail1"]["resources"]["echo"] = {
        "type": "echo", "depends_on": ["ip"], "properties": properties,
    }
    return data


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "cluster.toml")
    return [str(p) for p in info.value.problems]


def test_our_types_are_declared_entry_points() -> None:
    """`pip install` writes them from pyproject.toml; nothing needs importing first."""
    assert set(OURS) <= set(resource_types.resource_type_names())
    assert resource_types.get("process") is PROCESS_TYPE
    smtp = resource_types.get("smtp")
    assert smtp.name == "smtp" and smtp.resource.type_name == "smtp"
    assert "smart_host" in smtp.properties


def test_a_third_party_type_is_found_through_its_entry_point(
    distributions: Distributions,
) -> None:
    assert resource_types.find("echo") is None
    assert any("unknown resource type 'echo'" in p for p in problems_of(with_echo({})))

    distributions.add("acme-echo", plugin_example.ENTRY_POINT)
    assert "echo" in resource_types.resource_type_names()
    assert resource_types.get("echo") is plugin_example.ECHO_TYPE
    config = config_from_dict(with_echo({"port": 2526}))
    echo = config.virtual_servers[0].resource("echo")
    assert echo is not None and echo.properties == {"port": 2526, "greeting": "echo"}
    assert config_from_dict(config.to_dict()) == config
    assert "type = \"echo\"" in render_toml(config)
    assert problems_of(with_echo({"port": "25"})) == [
        'virtual_servers.mail1.resources.echo.properties.port: '
        'expected an integer, got a string ("25")'
    ]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tests.no_such_module:ECHO_TYPE",
         "cannot load resource type 'echo' (tests.no_such_module:ECHO_TYPE, from acme-echo 1.0): "
         "ModuleNotFoundError: No module named 'tests.no_such_module'"),
        (f"{plugin_example.__name__}:EchoResource",
         f"resource type 'echo' ({plugin_example.__name__}:EchoResource, from acme-echo 1.0) "
         f"is not a ResourceType: got {plugin_example.EchoResource!r}"),
        ("clustermail.cluster.resources.disk:DISK_TYPE",
         "resource type 'echo' (clustermail.cluster.resources.disk:DISK_TYPE, from acme-echo "
         "1.0) is named 'disk': the entry point must be too"),
    ],
    ids=["missing module", "not a ResourceType", "another name"],
)
def test_a_broken_declaration_is_a_clear_configuration_error(
    distributions: Distributions, target: str, expected: str
) -> None:
    distributions.add("acme-echo", {"echo": target})
    with pytest.raises(ResourceTypeError) as info:
        resource_types.get("echo")
    assert str(info.value) == expected
    assert problems_of(with_echo({"port": 1})) == [
        f"virtual_servers.mail1.resources.echo.type: {expected}"
    ]


def test_one_declaration_seen_twice_is_one(distributions: Distributions) -> None:
    distributions.add("acme-echo", plugin_example.ENTRY_POINT)
    distributions.add("acme-echo-copy", plugin_example.ENTRY_POINT)
    assert resource_types.get("echo") is plugin_example.ECHO_TYPE


def test_a_type_declared_twice_is_refused(distributions: Distributions) -> None:
    distributions.add("acme-echo", plugin_example.ENTRY_POINT)
    distributions.add("other-echo", {"echo": "clustermail.cluster.resources.disk:DISK_TYPE"})
    with pytest.raises(ResourceTypeError, match="resource type 'echo' is declared more than once"):
        resource_types.get("echo")


def test_unknown_types_name_the_known_ones() -> None:
    with pytest.raises(UnknownResourceType) as info:
        resource_types.get("smtpd")
    assert str(info.value).startswith("unknown resource type 'smtpd' (known: admin_service, "
                                      "disk, imap4, ")


def test_a_spare_host_can_load_every_type() -> None:
    assert resource_types.load_all() == []
