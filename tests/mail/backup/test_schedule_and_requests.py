"""Backup schedules (pure), store request records, and the mail_store's backup properties
as the configuration check sees them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from clustermail.cluster.config import ConfigError, config_from_dict
from clustermail.mail.backup import requests as rq
from clustermail.mail.backup.process import DEFAULT_MAX_RATE
from clustermail.mail.backup.schedule import ScheduleError, due, parse_schedule
from clustermail.mail.backup.worker import plan_from

DAY = 86400.0


@pytest.mark.parametrize(("text", "period", "offset"), [
    ("daily 02:00", DAY, 7200.0),
    ("  Daily   2:30 ", DAY, 9000.0),
    ("every 6h", 6 * 3600.0, 0.0),
    ("every 30m", 1800.0, 0.0),
    ("every 1d", DAY, 0.0),
])
def test_schedules_read(text: str, period: float, offset: float) -> None:
    s = parse_schedule(text)
    assert (s.period, s.offset) == (period, offset)


@pytest.mark.parametrize(("text", "message"), [
    ("daily 25:00", "no such time of day"),
    ("daily 2pm", "expected"),
    ("every 0m", "at least every 1m"),
    ("every 5s", "expected"),
    ("weekly", "expected"),
    ("", "expected"),
])
def test_bad_schedules_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as info:
        parse_schedule(text)
    assert "daily 02:00" in str(info.value) or "at least" in str(info.value)


def test_slots_are_taken_once_and_missed_ones_once() -> None:
    s = parse_schedule("daily 02:00")
    t = 20_000 * DAY  # 00:00 UTC
    assert s.latest(t + 3 * 3600) == t + 7200 and s.next(t + 3 * 3600) == t + DAY + 7200
    assert s.latest(t + 3600) == t - DAY + 7200  # before 02:00: yesterday's
    assert due(s, None, t + 3 * 3600) is None  # a new schedule waits for its next slot
    assert due(s, t + 7200, t + 5 * 3600) is None  # taken already
    # Down for three days: one backup when back, not three.
    assert due(s, t + 7200, t + 3 * DAY + 3 * 3600) == t + 3 * DAY + 7200


def test_request_records_round_trip_and_bad_ones_are_named() -> None:
    request = rq.new_request("mail1", "restore", {"from": "x", "database": "SG1/DB1"},
                             claim_timeout=30, requested_by="me")
    running = replace(request, state=rq.RUNNING, node="node1", epoch=4, started=1.0,
                      progress=rq.RequestProgress("SG1/DB1", 5, 10))
    assert rq.StoreRequest.from_store(running.key, running.to_store()) == running
    assert running.key == f"/clustermail-requests/mail1/{request.id}"
    with pytest.raises(rq.RequestError, match="unknown store operation"):
        rq.new_request("mail1", "format-disk", {}, claim_timeout=1)
    for bad in (b"{", b"[]", b'{"id": "x", "vs": "v", "op": "backup", "state": "odd"}',
                b'{"vs": "v", "op": "backup"}'):
        with pytest.raises(rq.RequestError, match="/k: not a store request"):
            rq.StoreRequest.from_store("/k", bad)
    record = rq.ScheduleRecord({"full": 5.0})
    assert rq.ScheduleRecord.from_store("/s", record.to_store()) == record
    with pytest.raises(rq.RequestError, match="not a backup schedule record"):
        rq.ScheduleRecord.from_store("/s", b"nope")


def _config(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodes": {"node1": {}},
        "virtual_servers": {"mail1": {"resources": {
            "disk": {"type": "disk", "properties": {"path": "/tmp/x"}},
            "store": {"type": "mail_store", "depends_on": ["disk"], "properties": props},
        }}},
    }


def test_backup_properties_are_checked_with_the_configuration() -> None:
    config_from_dict(_config({"backup_schedule": "daily 02:00", "backup_keep": 7,
                              "backup_incremental_schedule": "every 1h",
                              "backup_path": "{data}/backups"}))
    with pytest.raises(ConfigError) as info:
        config_from_dict(_config({"backup_schedule": "at night", "backup_keep": 0}))
    text = str(info.value)
    assert "backup_schedule" in text and '"daily 02:00"' in text
    assert "backup_keep" in text and "integer >= 1" in text
    with pytest.raises(ConfigError, match=r"backup_keep.*needs backup_schedule"):
        config_from_dict(_config({"backup_keep": 3}))


def test_the_backup_pace_is_a_rate_in_mb_per_second() -> None:
    for good in (0, 12.5, 200):
        config_from_dict(_config({"backup_max_rate": good}))
    for bad in (-1, "fast", True):
        with pytest.raises(ConfigError,
                           match=r"backup_max_rate: expected (a number|a rate in MB/s >= 0)"):
            config_from_dict(_config({"backup_max_rate": bad}))
    assert plan_from({}).max_rate == DEFAULT_MAX_RATE == 50e6
    assert plan_from({"backup_max_rate": 12.5}).max_rate == 12.5e6
    assert plan_from({"backup_max_rate": 0}).max_rate is None  # unpaced
