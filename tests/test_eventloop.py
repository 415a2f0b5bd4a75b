"""The loop of the processes that serve mail (clustermail.eventloop)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from clustermail import eventloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_the_resource_host_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert issubclass(eventloop.run(_loop_type()), uvloop.Loop)


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    loop_type = eventloop.run(_loop_type())
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_an_unknown_choice_is_said_and_runs_uvloop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(eventloop.ENV, "tokio")
    assert issubclass(eventloop.run(_loop_type()), uvloop.Loop)
    assert "'tokio' is neither 'uvloop' nor 'asyncio'" in caplog.text
