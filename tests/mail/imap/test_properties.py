"""Hypothesis properties: totality of parser and framer, and render/parse round trips."""

from __future__ import annotations

import contextlib
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import mutf7, response
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.framing import (
    CommandFrame,
    CommandFramer,
    FrameEvent,
    FramingError,
    FramingLimits,
)
from clustermail.mail.imap.lexer import Reader
from clustermail.mail.imap.parser import _parse_command, parse_command
from clustermail.mail.imap.sequence import SequenceSet

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Fragments of real commands, so random concatenations reach deep into the grammar.
FRAGMENTS = [
    b"a ",
    b"A1 ",
    b" ",
    b"  ",
    b"(",
    b")",
    b"[",
    b"]",
    b"<",
    b">",
    b".",
    b"*",
    b":",
    b",",
    b"%",
    b"\\",
    b'"',
    b"{",
    b"}",
    b"+",
    b"-",
    b"~",
    b"\r\n",
    b"\n",
    b"\x00",
    b"\xff",
    b"0",
    b"1",
    b"7",
    b"42",
    b"4294967296",
    b"99999999999999999999999",
    b"NIL",
    b"INBOX",
    b"&",
    b"&-",
    b"&AOQ-",
    b"{3}\r\nabc",
    b"{0}\r\n",
    b"{2+}\r\nxy",
    b"{5}\r\nab",
    b"~{1}\r\nx",
    b"UID",
    b"FETCH",
    b"STORE",
    b"SEARCH",
    b"COPY",
    b"MOVE",
    b"EXPUNGE",
    b"LOGIN",
    b"LIST",
    b"LSUB",
    b"SELECT",
    b"EXAMINE",
    b"STATUS",
    b"APPEND",
    b"CREATE",
    b"RENAME",
    b"ID",
    b"ENABLE",
    b"AUTHENTICATE",
    b"SETQUOTA",
    b"GETQUOTA",
    b"NOOP",
    b"BODY",
    b"BODY.PEEK",
    b"HEADER.FIELDS",
    b"HEADER.FIELDS.NOT",
    b"TEXT",
    b"MIME",
    b"HEADER",
    b"FLAGS",
    b"+FLAGS.SILENT",
    b"\\Seen",
    b"OR",
    b"NOT",
    b"ALL",
    b"FULL",
    b"CHARSET",
    b"UTF-8",
    b"SINCE",
    b"1-Feb-2024",
    b'"07-Feb-1994 21:52:25 -0800"',
    b"RETURN",
    b"STATUS",
    b"SPECIAL-USE",
    b"USE",
    b"CHANGEDSINCE",
    b"UNCHANGEDSINCE",
    b"VANISHED",
    b"MODSEQ",
    b"HEADER",
    b"LARGER",
    b"KEYWORD",
    b"=",
    b"dGVzdA==",
]

imapish = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map(b"".join)


def _only_parse_errors(raw: bytes) -> None:
    try:
        command = _parse_command(raw)
    except ParseError as err:
        assert err.message
        assert err.status in ("BAD", "NO")
        response.render_parse_error(err)  # always renderable
    else:
        assert isinstance(command, c.Command)


@FAST
@given(st.binary(max_size=300))
def test_parser_is_total_on_arbitrary_bytes(raw: bytes) -> None:
    _only_parse_errors(raw)


@FAST
@given(imapish)
def test_parser_is_total_on_imap_like_input(raw: bytes) -> None:
    _only_parse_errors(raw)


@FAST
@given(st.sampled_from([b"a FETCH 1 ", b"a SEARCH ", b"a UID STORE 1:* ", b"a LIST "]), imapish)
def test_parser_is_total_after_valid_prefixes(prefix: bytes, rest: bytes) -> None:
    _only_parse_errors(prefix + rest)


def test_public_entry_point_never_leaks_other_exceptions() -> None:
    # Deep nesting well past the limit is a ParseError, not a RecursionError.
    for raw in (b"a SEARCH " + b"(" * 10000, b"a SEARCH " + b"NOT " * 10000 + b"ALL"):
        with contextlib.suppress(ParseError):
            parse_command(raw)


def _frame_everything(data: bytes, cuts: list[int], limits: FramingLimits) -> list[FrameEvent]:
    framer = CommandFramer(limits)
    events: list[FrameEvent] = []
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        framer.feed(data[start:end])
        # Bounded: each event consumes input or ends the command, so a loop
        # without progress would exceed this.
        for _ in range(len(data) + 2):
            event = framer.next_event()
            if event is None:
                break
            events.append(event)
        else:
            raise AssertionError("framer did not stop producing events")
    return events


LIMITS = FramingLimits(max_line=64, max_literal=200, max_argument_literal=20, max_command=300)


@FAST
@given(st.one_of(imapish, st.binary(max_size=400)), st.lists(st.integers(0, 400), max_size=8))
def test_framer_is_total_and_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = _frame_everything(data, [], LIMITS)
    pieces = _frame_everything(data, cuts, LIMITS)
    assert [repr(e) for e in whole] == [repr(e) for e in pieces]
    for event in whole:
        if isinstance(event, CommandFrame):
            _only_parse_errors(event.raw)
        elif isinstance(event, FramingError):
            response.render_parse_error(event.error)


text = st.text(max_size=80)


@FAST
@given(text, text)
def test_rendered_strings_parse_back(user: str, password: str) -> None:
    raw = b"a LOGIN " + response.astring(user) + b" " + response.string(password)
    assert parse_command(raw) == c.Login("a", user, password)


@FAST
@given(st.binary(max_size=200))
def test_rendered_bytes_parse_back_as_strings(data: bytes) -> None:
    for rendered in (response.string(data), response.nstring(data), response.astring(data)):
        reader = Reader(rendered)
        assert reader.astring("value") == data
        assert reader.eof()


@FAST
@given(st.text(max_size=40))
def test_mailbox_names_round_trip(name: str) -> None:
    command = parse_command(b"a SELECT " + response.mailbox(name))
    expected = "INBOX" if name.upper() == "INBOX" else name
    assert command == c.Select("a", expected)


@FAST
@given(st.text(max_size=60))
def test_mutf7_round_trip(name: str) -> None:
    encoded = mutf7.encode(name)
    assert all(" " <= ch <= "~" for ch in encoded)
    assert mutf7.decode(encoded) == name


numbers = st.integers(1, 2**32 - 1)
bound = st.one_of(numbers, st.just("*"))
ranges = st.tuples(bound, st.one_of(st.none(), bound)).map(
    lambda r: str(r[0]) if r[1] is None else f"{r[0]}:{r[1]}"
)


@FAST
@given(st.lists(ranges, min_size=1, max_size=6).map(",".join))
def test_sequence_sets_print_as_parsed(text_form: str) -> None:
    parsed = SequenceSet.parse(text_form)
    assert SequenceSet.parse(str(parsed)) == parsed
    assert len(str(parsed)) <= len(text_form)


@FAST
@given(st.lists(st.integers(1, 300), min_size=1, max_size=60, unique=True))
def test_compressed_sets_hold_exactly_the_numbers(values: list[int]) -> None:
    values.sort()
    compressed = SequenceSet.compress(values)
    assert list(compressed.iter_numbers(300)) == values
    assert len(str(compressed)) <= len(",".join(map(str, values)))
