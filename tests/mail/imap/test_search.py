"""The SEARCH evaluator: RFC 3501 §6.4.4 semantics against an in-memory message view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import search as s
from clustermail.mail.imap.parser import parse_command
from clustermail.mail.imap.search import MessageView, SearchContext, matches
from clustermail.mail.imap.sequence import SequenceSet


@dataclass
class Message:
    seq: int
    uid: int
    flags: frozenset[str] = frozenset()
    internal_date: datetime = datetime(2024, 2, 1, 12, 0, tzinfo=UTC)
    size: int = 1000
    sent_date: date | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""

    def header(self, name: str) -> Sequence[str]:
        return self.headers.get(name.lower(), [])

    def body_text(self) -> str:
        return self.body

    def full_text(self) -> str:
        head = "\n".join(f"{k}: {v}" for k, vs in self.headers.items() for v in vs)
        return head + "\n\n" + self.body


EAST = timezone(timedelta(hours=9))
WEST = timezone(timedelta(hours=-8))

MAILBOX = [
    Message(
        1,
        10,
        flags=frozenset({"\\Seen", "\\Answered", "$Forwarded"}),
        internal_date=datetime(2024, 1, 31, 23, 30, tzinfo=WEST),  # 1 Feb in UTC
        size=500,
        sent_date=datetime(2024, 1, 30, 8, 0, tzinfo=EAST),
        headers={
            "from": ["Jürgen Smith <js@example.org>"],
            "subject": ["Quarterly report"],
            "to": ["team@example.org"],
        },
        body="Numbers are up.",
    ),
    Message(
        2,
        11,
        flags=frozenset({"\\Flagged", "\\Recent"}),
        internal_date=datetime(2024, 2, 1, 0, 30, tzinfo=EAST),  # 31 Jan in UTC
        size=5000,
        sent_date=None,
        headers={
            "from": ["alice@example.com"],
            "subject": ["Lunch?"],
            "cc": ["bob@example.com"],
            "x-spam": [""],
        },
        body="Shall we meet at noon? SMITH will come too.",
    ),
    Message(
        3,
        20,
        flags=frozenset({"\\Deleted", "\\Recent", "\\Seen", "\\Draft"}),
        internal_date=datetime(2024, 2, 2, 9, 0, tzinfo=UTC),
        size=1000,
        sent_date=date(2024, 2, 2),
        headers={
            "from": ["carol@example.net"],
            "bcc": ["hidden@example.net"],
            "subject": ["Re: Quarterly REPORT"],
        },
        body="",
    ),
]
CONTEXT = SearchContext(max_seq=3, max_uid=20)


def run(criteria: str) -> list[int]:
    command = parse_command(b"a SEARCH " + criteria.encode())
    assert isinstance(command, c.Search)
    views: list[MessageView] = list(MAILBOX)
    return [m.seq for m in views if matches(command.key, m, CONTEXT)]


CASES = [
    ("ALL", [1, 2, 3]),
    ("1", [1]),
    ("2:*", [2, 3]),
    ("*", [3]),
    ("*:2", [2, 3]),
    ("1,3", [1, 3]),
    ("4:*", [3]),  # n:* always includes the last message
    ("5", []),
    ("UID 11:*", [2, 3]),
    ("UID *", [3]),
    ("UID 12:19", []),
    ("UID 100:*", [3]),
    ("SEEN", [1, 3]),
    ("UNSEEN", [2]),
    ("ANSWERED", [1]),
    ("UNANSWERED", [2, 3]),
    ("DELETED", [3]),
    ("UNDELETED", [1, 2]),
    ("DRAFT", [3]),
    ("UNDRAFT", [1, 2]),
    ("FLAGGED", [2]),
    ("UNFLAGGED", [1, 3]),
    ("RECENT", [2, 3]),
    ("OLD", [1]),
    ("NEW", [2]),
    ("KEYWORD $forwarded", [1]),  # keywords compare case-insensitively
    ("UNKEYWORD $Forwarded", [2, 3]),
    ("FROM smith", [1]),  # case-insensitive substring
    ("SUBJECT report", [1, 3]),
    ('SUBJECT "quarterly report"', [1, 3]),
    ("TO team", [1]),
    ("CC bob", [2]),
    ("BCC hidden", [3]),
    ('HEADER X-Spam ""', [2]),  # empty string: the header exists
    ("HEADER subject lunch", [2]),
    ('HEADER X-Missing ""', []),
    ("BODY smith", [2]),  # body only, not headers
    ("TEXT smith", [1, 2]),  # headers and body
    ("LARGER 999", [2, 3]),
    ("SMALLER 1000", [1]),
    # Dates compare the calendar date in the message's own zone, time ignored.
    ("ON 31-Jan-2024", [1]),
    ("ON 1-Feb-2024", [2]),
    ("BEFORE 1-Feb-2024", [1]),
    ("SINCE 1-Feb-2024", [2, 3]),
    ("SINCE 2-Feb-2024", [3]),
    ("SENTON 30-Jan-2024", [1]),  # 08:00 +0900, still the 30th as written
    ("SENTBEFORE 2-Feb-2024", [1]),  # no Date: header never matches a SENT* key
    ("SENTSINCE 1-Jan-2024", [1, 3]),
    ("NOT SENTSINCE 1-Jan-2024", [2]),
    ("OR SEEN FLAGGED", [1, 2, 3]),
    ("OR DELETED FROM alice", [2, 3]),
    ("NOT OR DELETED FROM alice", [1]),
    ("OR (SEEN ANSWERED) (FLAGGED LARGER 4000)", [1, 2]),
    ("NOT (SEEN NOT DELETED)", [2, 3]),
    ("OR OR 1 2 3", [1, 2, 3]),
    ("SEEN 2:*", [3]),
    ("NOT NOT NOT SEEN", [2]),
    ("UNSEEN SEEN", []),
]


@pytest.mark.parametrize(("criteria", "expected"), CASES, ids=[c[0] for c in CASES])
def test_search(criteria: str, expected: list[int]) -> None:
    assert run(criteria) == expected


def test_utf8_search_string() -> None:
    command = parse_command("a SEARCH CHARSET UTF-8 FROM {5}\r\nJÜRG".encode())
    assert isinstance(command, c.Search)
    assert [m.seq for m in MAILBOX if matches(command.key, m, CONTEXT)] == [1]


def test_star_in_an_empty_mailbox_matches_nothing() -> None:
    key = s.SequenceKey(parse_seq("*"))
    assert not matches(key, MAILBOX[0], SearchContext(max_seq=0, max_uid=0))


def parse_seq(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


def test_modseq_key_needs_a_modseq_on_the_view() -> None:
    key = s.ModSeqKey(5)
    assert not matches(key, MAILBOX[0], CONTEXT)

    @dataclass
    class WithModSeq(Message):
        modseq: int = 7

    assert matches(key, WithModSeq(1, 1), CONTEXT)
    assert not matches(s.ModSeqKey(8), WithModSeq(1, 1), CONTEXT)
