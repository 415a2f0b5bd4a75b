"""Messages built to make MIME analysis expensive are stored with a bounded structure,
analysed in bounded time, and still served: past a limit the rest is opaque."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from clustermail.mail.store import mime
from tests.security.imap_support import ALICE, Raw, imap_server, mailbox_database

MANY_PARTS = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 50_000
MANY_ADDRESSES = b"To: " + b"a@b.test," * 100_000 + b"\r\n\r\nbody\r\n"
LONG_PHRASE = b"To: " + b"word " * 200_000 + b"<a@b.test>\r\n\r\nbody\r\n"
MANY_FIELDS = b"X-Field: 1\r\n" * 200_000 + b"Subject: late\r\n\r\nbody\r\n"
HUGE_SUBJECT = b"Subject: " + b"s" * 2_000_000 + b"\r\n\r\nbody\r\n"

CASES = {
    "parts": MANY_PARTS,
    "addresses": MANY_ADDRESSES,
    "phrase": LONG_PHRASE,
    "fields": MANY_FIELDS,
    "subject": HUGE_SUBJECT,
}


@pytest.mark.parametrize("name", CASES)
def test_hostile_structure_is_bounded(name: str) -> None:
    raw = CASES[name]
    start = time.monotonic()
    structure = mime.analyze(raw)
    took = time.monotonic() - start
    stored = structure.to_json()
    assert len(stored) <= mime.LIMITS.structure_budget(len(raw))
    assert len(structure.parts) <= mime.LIMITS.max_parts + 1
    assert took < 5.0, f"{name}: {took:.1f} s"


def test_many_parts_keep_the_first_ones_and_the_rest_in_the_last() -> None:
    s = mime.analyze(MANY_PARTS, mime.MimeLimits(max_parts=10))
    assert sorted(s.parts, key=int) == [str(n) for n in range(1, 10)]  # the body is one
    _start, _body, end = s.parts["9"]
    assert end == len(MANY_PARTS)  # the last one holds the rest, unparsed
    assert s.body[9] == "MIXED"


def test_address_headers_are_capped() -> None:
    envelope = mime.analyze(MANY_ADDRESSES).envelope
    to = envelope[5]
    assert isinstance(to, list) and len(to) == mime.LIMITS.max_addresses
    assert to[0] == [None, None, "a", "b.test"]


def test_header_past_its_line_limit_still_ends_at_its_blank_line() -> None:
    s = mime.analyze(MANY_FIELDS)
    assert s.section("TEXT") == (len(MANY_FIELDS) - len(b"body\r\n"), len(MANY_FIELDS))


def test_the_server_stores_and_serves_a_hostile_message(tmp_path: Path) -> None:
    with mailbox_database(tmp_path) as db, imap_server(db) as srv:
        db.deliver_sync(MANY_PARTS, [ALICE])
        c = Raw(srv, timeout=30)
        c.login()
        c.send(b"s SELECT INBOX\r\nf FETCH 1 (BODYSTRUCTURE RFC822.SIZE)\r\n")
        lines = c.until_tagged(b"f")
        assert lines[-1].startswith(b"f OK"), lines[-1]
        fetched = b"".join(lines)
        assert b"RFC822.SIZE %d" % len(MANY_PARTS) in fetched
        assert len(fetched) < 200_000
        c.close()
