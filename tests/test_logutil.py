"""The process log: one JSON line per record, whichever way a module logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from clustermail import logutil
from clustermail.cluster import eventlog
from clustermail.cluster.host_output import EventSink, HostLog, transition


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    out = io.StringIO()
    logutil.setup(stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_log_event_is_one_json_line(stream: io.StringIO) -> None:
    logutil.log_event("cycle", message="no action: Zoë owns mail1", node="node1", vs="",
                      resource=None, count=3)
    logutil.log_event("fenced", message="lost the lease", level="warning", node="node1")
    first, second = lines(stream)
    assert first["time"].endswith("+00:00") and first["level"] == "info"
    assert {k: v for k, v in first.items() if k != "time"} == {
        "level": "info", "logger": "clustermail", "event": "cycle",
        "message": "no action: Zoë owns mail1", "node": "node1", "count": 3}
    assert (second["level"], second["event"]) == ("warning", "fenced")


def test_stdlib_loggers_and_exceptions_use_the_same_lines(stream: io.StringIO) -> None:
    log = logging.getLogger("clustermail.mail.imap.session")
    log.debug("not shown at the default level")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("session with %s failed", "127.0.0.1")
    (line,) = lines(stream)
    assert line["logger"] == "clustermail.mail.imap.session"
    assert line["level"] == "error" and line["message"] == "session with 127.0.0.1 failed"
    assert "ValueError: boom" in line["exception"]


def test_a_field_cannot_hide_the_message(stream: io.StringIO) -> None:
    logging.getLogger("x").info("real", extra={"fields": {"message": "forged", "a": 1}})
    (line,) = lines(stream)
    assert (line["message"], line["a"]) == ("real", 1)


def test_setup_twice_keeps_one_handler(stream: io.StringIO) -> None:
    logutil.setup(stream=stream)
    logutil.log_event("once", message="m")
    assert len(lines(stream)) == 1


def test_a_closed_stream_is_ignored(stream: io.StringIO) -> None:
    stream.close()
    logutil.log_event("lost", message="nobody reads this")  # must not raise


def test_the_resource_host_log_goes_to_the_process_log(stream: io.StringIO) -> None:
    agent = io.StringIO()
    log = HostLog("mail1", "node1", EventSink(agent, lambda why: None))
    token = transition.set("t7")
    try:
        log.bind("ip").info("address up", address="127.0.0.11")
        log.bind(None).warning("slow")
    finally:
        transition.reset(token)
    info, warning = lines(stream)
    assert info["logger"] == "clustermail.host"
    assert {k: info[k] for k in ("vs", "node", "resource", "transition", "address")} == {
        "vs": "mail1", "node": "node1", "resource": "ip", "transition": "t7",
        "address": "127.0.0.11"}
    assert warning["level"] == "warning" and "resource" not in warning
    # Warnings and errors also reach the agent, as events on stdout.
    (event,) = [json.loads(x) for x in agent.getvalue().splitlines()]
    assert (event["event"], event["level"], event["message"]) == ("log", "warning", "slow")


def test_event_log_entries_are_also_process_log_lines(stream: io.StringIO) -> None:
    entry = eventlog.note("node2", "placement", "mail1: node1 is down", vs="mail1")
    assert (entry.node, entry.event, entry.vs) == ("node2", "placement", "mail1")
    (line,) = lines(stream)
    assert (line["event"], line["node"], line["vs"], line["message"]) == (
        "placement", "node2", "mail1", "mail1: node1 is down")
