"""The per-message shortcuts of the SMTP path give what the general code they replace
gives: control characters, domains, the Received date, the tracking day and line, queue
ids."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from datetime import UTC, datetime
from email.utils import formatdate

from clustermail.mail.queue.store import new_queue_id
from clustermail.mail.queue.tracking import TrackingEvent, _day
from clustermail.mail.smtp import policy


def test_control_characters_are_unicode_category_cc() -> None:
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        control = unicodedata.category(char) == "Cc"
        assert policy.has_control(f"a{char}b@example.test") is control, hex(code)
        assert policy.printable(f"x{char}") == ("x?" if control else f"x{char}"), hex(code)
    assert policy.printable("a\x00" * 300, 5) == "a?a?a"


def test_received_date_matches_formatdate() -> None:
    for now in (0.0, 1.5, 59.999, 1_780_000_000.25, 1_780_000_001.0, 4_000_000_000.75):
        header = policy.received_header(
            helo="h", client_address="192.0.2.1", hostname="mx", protocol="ESMTP",
            queue_id="Q", recipient=None, now=now,
        )
        assert header.endswith(f"; {formatdate(int(now), usegmt=True)}\r\n".encode())


def test_tracking_day_matches_datetime() -> None:
    for ts in (0.0, 86_399.5, 86_400.0, -0.5, 1_780_000_000.0, 1_780_012_800.0,
               1_780_012_799.999):
        assert _day(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def test_queue_ids_are_16_hex_digits_and_differ() -> None:
    ids = {new_queue_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9A-F]{16}", i) for i in ids)


def test_ascii_domains_checked_as_through_the_idna_codec() -> None:
    def through_idna(domain: str) -> bool:
        try:
            return policy._DOMAIN.match(domain.encode("idna").decode()) is not None
        except UnicodeError:
            return False

    long, too_long = "x" * 63, "x" * 64
    for domain in ("b", "b.", ".b", "b..c", f"{long}.c", f"{too_long}.c", too_long, "-b.c",
                   "b-.c", "b_c", f"c.{too_long}", "xn--bcher-kva.example", "B.EXAMPLE"):
        assert policy.valid_address(f"a@{domain}") is through_idna(domain), domain
    assert policy.valid_address("a@bücher.example")  # not ASCII: through the codec
    assert not policy.valid_address("a@b\u00ad\u200b..example")


def test_tracking_line_leaves_out_only_the_missing_optional_fields() -> None:
    tracked = TrackingEvent(1.5, "receive", "vs", None, "<m@x>", "", ["a@b"], 10, "2.0.0")
    assert json.loads(tracked.to_json()) == {
        "time": 1.5, "event": "receive", "vs": "vs", "message_id": "<m@x>", "sender": "",
        "recipients": ["a@b"], "size": 10, "result": "2.0.0", "detail": "",
    }
