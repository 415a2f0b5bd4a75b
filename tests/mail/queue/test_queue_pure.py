"""Retry, delay and expiry rules and DSN construction: pure functions, time as input."""

from __future__ import annotations

import email
from email.message import Message

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustermail.mail.queue import dsn, schedule
from clustermail.mail.queue.schedule import RetryPolicy
from clustermail.mail.smtp import policy
from clustermail.mail.smtp.replies import with_enhanced

P = RetryPolicy()  # 60 s doubling to 1 h, delay notice at 4 h, expiry at 2 days
T0 = 1_000_000.0


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [schedule.retry_interval(P, n) for n in (1, 2, 3, 4, 7, 8, 50, 10_000)] == [
        60, 120, 240, 480, 3600, 3600, 3600, 3600]


@given(st.integers(min_value=1, max_value=10**6), st.floats(min_value=0, max_value=10**6))
def test_next_attempt_never_passes_the_expiry(attempts: int, waited: float) -> None:
    now = T0 + waited
    when = schedule.next_attempt(P, attempts, now, T0)
    assert when <= T0 + P.expire_after
    assert when >= min(now, T0 + P.expire_after)


def test_delay_notice_and_expiry() -> None:
    h = 3600.0
    assert not schedule.delay_notice_due(P, T0, T0 + 3.9 * h, notified=False)
    assert schedule.delay_notice_due(P, T0, T0 + 4 * h, notified=False)
    assert not schedule.delay_notice_due(P, T0, T0 + 5 * h, notified=True)
    assert not schedule.expired(P, T0, T0 + 47 * h)
    assert schedule.expired(P, T0, T0 + 48 * h)
    assert not schedule.delay_notice_due(P, T0, T0 + 49 * h, notified=False)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="base > 0"):
        RetryPolicy(base=0)
    with pytest.raises(ValueError, match="max_interval"):
        RetryPolicy(base=10, max_interval=5)


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def test_dsn_is_a_multipart_report() -> None:
    original = b"From: a@x.test\r\nSubject: hello\r\nMessage-ID: <m1@x>\r\n\r\nsecret body\r\n"
    raw = dsn.build(
        reporting_mta="mail1.example.test", original_sender="a@x.test",
        original_message_id="<m1@x>", original=original,
        recipients=[dsn.RecipientReport("b@y.test", dsn.FAILED, "5.1.1", "550 5.1.1 no user",
                                        "mx.y.test:25")],
        arrived=T0, now=T0 + 60,
    )
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    msg = _parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "<a@x.test>" and msg["In-Reply-To"] == "<m1@x>"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert all(isinstance(p, Message) for p in parts)
    assert [p.get_content_type() for p in parts if isinstance(p, Message)] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = str(parts[1])
    assert "Final-Recipient: rfc822; b@y.test" in status
    assert "Action: failed" in status and "Status: 5.1.1" in status
    assert b"secret body" not in raw  # headers only are returned
    assert b"Subject: hello" in raw


def test_delay_notice_says_it_will_retry() -> None:
    raw = dsn.build(
        reporting_mta="m", original_sender="a@x.test", original_message_id=None,
        original=b"Subject: s\r\n\r\nb\r\n",
        recipients=[dsn.RecipientReport("b@y.test", dsn.DELAYED, "4.4.1", "no answer")],
        arrived=T0, now=T0 + 4 * 3600, retry_until=T0 + 2 * 86400,
    )
    assert b"Action: delayed" in raw and b"Will-Retry-Until:" in raw
    assert b"Subject: Delivery delayed" in raw


def test_bare_line_endings() -> None:
    assert policy.bare_line_ending(b"a\r\nb\r\n") is None
    assert policy.bare_line_ending(b"a\nb\r\n") == "bare LF"
    assert policy.bare_line_ending(b"a\rb\r\n") == "bare CR"
    assert policy.bare_line_ending(b"a\r\n.\n") == "bare LF"


@pytest.mark.parametrize(("reply", "expected"), [
    ("250 OK", "250 2.0.0 OK"),
    ("503 Error: send HELO first", "503 5.5.1 send HELO first"),
    ("500 Line too long (see RFC5321 4.5.3.1.6)",
     "500 5.5.6 Line too long (see RFC5321 4.5.3.1.6)"),
    ("552 Error: Too much mail data", "552 5.3.4 Too much mail data"),
    ("250 2.1.0 Sender OK", "250 2.1.0 Sender OK"),
    ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
    ("334 VXNlcm5hbWU6", "334 VXNlcm5hbWU6"),
    ("250-PIPELINING", "250-2.0.0 PIPELINING"),
])
def test_enhanced_codes(reply: str, expected: str) -> None:
    assert with_enhanced(reply) == expected


def test_addresses_and_relay_rules() -> None:
    assert policy.valid_address("a@example.test")
    assert policy.valid_address("jörg@bücher.test")
    assert policy.valid_address("a@[127.0.0.1]")
    for bad in ("a", "@x.test", "a@", "a@-x.test", "a@x..test", "a@" + "x" * 300):
        assert not policy.valid_address(bad), bad
    assert policy.relay_allowed(True, False)
    assert not policy.relay_allowed(False, False)
    assert policy.relay_allowed(False, True)
    assert policy.size_hint(["BODY=8BITMIME", "SIZE=123"]) == 123
    assert policy.message_id(b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nMessage-ID: <c@d>") == "<a@b>"
    looped = b"Received: x\r\n" * 3 + b"RECEIVED: y\r\nSubject: s\r\n\r\nReceived: body\r\n"
    assert policy.hop_count(looped) == 4
