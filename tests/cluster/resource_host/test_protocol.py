"""The host protocol: spec parsing with clear errors, event and command lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clustermail.cluster.host_protocol import (
    Command,
    ErrorEvent,
    GroupEvent,
    GroupState,
    HostEvent,
    LeaseCommand,
    LogEvent,
    OfflineCommand,
    PingCommand,
    Policy,
    PongEvent,
    ProtocolError,
    ResourceEvent,
    ResourceOfflineCommand,
    ResourceOnlineCommand,
    ResourceState,
    SpecError,
    UpdateCommand,
    decode_command,
    decode_event,
    decode_spec,
    encode_command,
    encode_event,
    encode_spec,
    parse_spec,
)


def spec_dict() -> dict[str, Any]:
    return {
        "vs": "mail1", "node": "node1", "epoch": 7, "store": "sqlite:///tmp/c.db",
        "data_dir": "/tmp/data",
        "resources": [
            {"name": "ip", "type": "ip_address", "properties": {"address": "127.0.0.11"}},
            {"name": "name", "type": "network_name", "properties": {"name": "mail1"},
             "depends_on": ["ip"], "policy": {"restart_threshold": 5}},
        ],
        "offline_resources": ["name"],
    }


def test_spec_parses_with_policy_defaults_and_round_trips() -> None:
    spec = parse_spec(spec_dict())
    assert spec.resource("ip").policy == Policy()
    assert spec.resource("name").policy.restart_threshold == 5
    assert spec.resource("name").policy.quick_check_interval == 5.0
    assert spec.resource("name").depends_on == ("ip",)
    assert spec.offline_resources == ("name",)
    assert decode_spec(encode_spec(spec)) == spec
    with pytest.raises(TypeError):
        spec.resource("ip").properties["address"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"epoch": -1}, "spec.epoch: expected an integer >= 0, got -1"),
        ({"epoch": True}, "spec.epoch: expected an integer >= 0, got True"),
        ({"data_dir": "rel"}, "spec.data_dir: expected an absolute path"),
        ({"vs": "a/b"}, "spec.vs: expected a name"),
        ({"colour": 1}, "spec: unknown key(s) colour"),
        ({"resources": {}}, "spec.resources: expected a JSON array, got an object"),
        ({"offline_resources": ["zz"]}, "spec.offline_resources[0]: no resource named 'zz'"),
    ],
)
def test_spec_errors_name_the_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({**spec_dict(), **patch})
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("index", "patch", "message"),
    [
        (1, {"name": "ip"}, "spec.resources[1].name: duplicate resource name 'ip'"),
        (0, {"policy": {"pending_timeout": 0}}, "resources[0].policy.pending_timeout: expected a "
         "positive number, got 0"),
        (0, {"policy": {"restart_threshold": 1.5}}, "restart_threshold: expected an integer"),
        (0, {"policy": {"affects_group": "yes"}}, "affects_group: expected true or false"),
        (0, {"policy": {"quick": 1}}, "policy: unknown key(s) quick"),
        (0, {"properties": []}, "resources[0].properties: expected a JSON object"),
        (0, {"depends_on": "ip"}, "resources[0].depends_on: expected a JSON array"),
        (0, {"type": ""}, "resources[0].type: expected a non-empty string"),
    ],
)
def test_resource_errors_name_the_key(index: int, patch: dict[str, Any], message: str) -> None:
    d = spec_dict()
    d["resources"][index].update(patch)
    with pytest.raises(SpecError) as err:
        parse_spec(d)
    assert message in str(err.value)


def test_events_round_trip() -> None:
    events: list[HostEvent] = [
        ResourceEvent("banner", ResourceState.ONLINE, "ok", 1.5, pid=42),
        ResourceEvent("ip", ResourceState.FAILED, "gone", 2.0),
        GroupEvent(GroupState.PARTIALLY_ONLINE, "not online: banner (offline)", 3.0),
        LogEvent("warning", "slow", 4.0, "disk"),
        ErrorEvent("bad command", 5.0),
        GroupEvent(GroupState.FAILED, "resource smtp failed: in use", 6.0,
                   start_failure="smtp: in use"),
        PongEvent(17, 7.0),
    ]
    for event in events:
        line = encode_event(event)
        assert line.endswith("\n") and line.count("\n") == 1
        assert decode_event(line) == event
    assert json.loads(encode_event(events[0])) == {
        "event": "resource", "resource": "banner", "state": "online", "reason": "ok",
        "time": 1.5, "pid": 42,
    }
    assert "pid" not in json.loads(encode_event(events[1]))
    assert "start_failure" not in json.loads(encode_event(events[2]))
    assert json.loads(encode_event(PongEvent(17, 7.0))) == {"event": "pong", "seq": 17,
                                                            "time": 7.0}


def test_commands_round_trip() -> None:
    spec = parse_spec(spec_dict())
    commands: list[Command] = [
        OfflineCommand(),
        ResourceOfflineCommand("ip"),
        ResourceOnlineCommand("ip"),
        UpdateCommand(spec),
        LeaseCommand(123.25),
        PingCommand(3),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command
    assert encode_command(OfflineCommand()) == '{"cmd":"offline"}\n'
    assert encode_command(PingCommand(3)) == '{"cmd":"ping","seq":3}\n'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "not JSON"),
        (b"\xff", "not UTF-8"),
        (b"42", "expected a JSON object, got a number"),
        (b'{"cmd": "offline", "now": true}', "unknown key(s) now"),
        (b'{"cmd": "resource_online", "resource": 3}', "command.resource"),
        (b'{"cmd": "lease", "safe_until": "soon"}', "command.safe_until: expected a number"),
        (b'{"cmd": "update", "spec": {}}', "command.spec.vs"),
        (b'{"cmd": "ping", "seq": -1}', "command.seq: expected an integer >= 0"),
        (b'{"nothing": 1}', "unknown command None"),
    ],
)
def test_bad_commands_say_what_is_wrong(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_command(line)
    assert message in str(err.value)


def test_unknown_event_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown event 'hello'"):
        decode_event('{"event": "hello"}')
