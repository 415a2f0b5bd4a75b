"""The framer: literals across chunk boundaries, LITERAL+, limits, STARTTLS, line mode.

Most cases frame a logged-in client's input; the limits before login are at the end."""

from __future__ import annotations

import pytest

from clustermail.mail.imap import commands as c
from clustermail.mail.imap.framing import (
    CommandFrame,
    CommandFramer,
    ContinuationNeeded,
    FrameEvent,
    FramingError,
    FramingLimits,
)
from clustermail.mail.imap.parser import parse_command


def drain(framer: CommandFramer) -> list[FrameEvent]:
    events: list[FrameEvent] = []
    while (event := framer.next_event()) is not None:
        events.append(event)
    return events


def feed_all(
    data: bytes,
    *,
    chunk: int | None = None,
    limits: FramingLimits | None = None,
    authenticated: bool = True,
) -> list[FrameEvent]:
    framer = logged_in(limits) if authenticated else CommandFramer(limits)
    events: list[FrameEvent] = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        framer.feed(data[i : i + step])
        events += drain(framer)
    return events


def logged_in(limits: FramingLimits | None = None) -> CommandFramer:
    framer = CommandFramer(limits)
    framer.authenticated = True
    return framer


def frames(events: list[FrameEvent]) -> list[bytes]:
    return [e.raw for e in events if isinstance(e, CommandFrame)]


STREAM = (
    b"a1 NOOP\r\n"
    b"a2 LOGIN {4}\r\nfred {6+}\r\nsecret\r\n"
    b"a3 APPEND INBOX (\\Seen) {11}\r\nHi\r\n\r\nthere\r\n"
    b"a4 SELECT INBOX\n"
    b"a5 SEARCH TEXT {0}\r\n\r\n"
)
EXPECTED = [
    b"a1 NOOP",
    b"a2 LOGIN {4}\r\nfred {6+}\r\nsecret",
    b"a3 APPEND INBOX (\\Seen) {11}\r\nHi\r\n\r\nthere",
    b"a4 SELECT INBOX",
    b"a5 SEARCH TEXT {0}\r\n",
]


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 5, 7, 64])
def test_stream_frames_the_same_whatever_the_chunking(chunk: int | None) -> None:
    events = feed_all(STREAM, chunk=chunk)
    assert frames(events) == EXPECTED
    # one continuation per synchronizing literal: a3's {11} and a5's {0}
    assert [e.size for e in events if isinstance(e, ContinuationNeeded)] == [4, 11, 0]
    assert not [e for e in events if isinstance(e, FramingError)]
    commands = [parse_command(f) for f in frames(events)]
    assert commands[1] == c.Login("a2", "fred", "secret")
    assert isinstance(commands[2], c.Append)
    assert commands[2].message == b"Hi\r\n\r\nthere"


def test_continuation_comes_before_the_literal_is_sent() -> None:
    framer = logged_in()
    framer.feed(b"a LOGIN {4}\r\n")
    assert framer.next_event() == ContinuationNeeded(4, "a")
    assert framer.next_event() is None
    assert framer.in_command
    framer.feed(b"fred x\r\n")
    assert framer.next_event() == CommandFrame(b"a LOGIN {4}\r\nfred x")
    assert not framer.in_command


def test_literal_plus_needs_no_continuation() -> None:
    events = feed_all(b"a LOGIN {4+}\r\nfred {1+}\r\nx\r\n")
    assert events == [CommandFrame(b"a LOGIN {4+}\r\nfred {1+}\r\nx")]


def test_literal_data_that_looks_like_commands_stays_data() -> None:
    payload = b"b DELETE INBOX\r\nc LOGOUT\r\n"
    events = feed_all(b"a APPEND INBOX {%d+}\r\n" % len(payload) + payload + b"\r\n", chunk=3)
    assert frames(events) == [b"a APPEND INBOX {%d+}\r\n" % len(payload) + payload]


def test_many_non_synchronizing_literals_do_not_recurse() -> None:
    data = b"a SEARCH" + b" TEXT {1+}\r\nx" * 5000 + b"\r\n"
    limits = FramingLimits(max_command=10 * 1024 * 1024)
    assert len(frames(feed_all(data, limits=limits))) == 1


SMALL = FramingLimits(max_line=100, max_literal=1000, max_argument_literal=50, max_command=500)


def test_sync_append_over_appendlimit_is_no_toobig_and_not_fatal() -> None:
    framer = logged_in(SMALL)
    framer.feed(b"a1 APPEND INBOX {1001}\r\na2 NOOP\r\n")
    event = framer.next_event()
    assert isinstance(event, FramingError)
    err = event.error
    assert (err.tag, err.status, err.code, err.fatal) == ("a1", "NO", "TOOBIG", False)
    assert "1001" in err.message and "1000" in err.message
    # The client got no "+", so it did not send the literal: framing goes on.
    assert framer.next_event() == CommandFrame(b"a2 NOOP")
    assert not framer.closed


def test_sync_argument_literal_over_limit_is_bad_toobig() -> None:
    events = feed_all(b"a1 LOGIN {51}\r\na2 NOOP\r\n", limits=SMALL)
    assert isinstance(events[0], FramingError)
    assert (events[0].error.status, events[0].error.code) == ("BAD", "TOOBIG")
    assert frames(events) == [b"a2 NOOP"]


def test_append_within_appendlimit_is_accepted() -> None:
    message = b"x" * 1000
    events = feed_all(b"a1 APPEND INBOX {1000+}\r\n" + message + b"\r\n", limits=SMALL, chunk=10)
    assert frames(events) == [b"a1 APPEND INBOX {1000+}\r\n" + message]


def test_uid_prefix_does_not_make_an_append() -> None:
    events = feed_all(b"a1 UID SEARCH TEXT {51}\r\n", limits=SMALL)
    assert isinstance(events[0], FramingError)
    assert events[0].error.status == "BAD"


def test_non_sync_literal_over_limit_is_fatal_and_nothing_more_is_framed() -> None:
    framer = logged_in(SMALL)
    framer.feed(b"a1 APPEND INBOX {1001+}\r\n" + b"b DELETE INBOX\r\n" * 10)
    event = framer.next_event()
    assert isinstance(event, FramingError)
    assert (event.error.tag, event.error.code, event.error.fatal) == ("a1", "TOOBIG", True)
    assert framer.closed
    framer.feed(b"c NOOP\r\n")
    assert framer.next_event() is None


def test_whole_command_limit_counts_every_literal() -> None:
    # Each literal is within max_argument_literal, together they pass max_command.
    data = b"a LOGIN {40+}\r\n" + b"x" * 40 + b"".join(b" {40+}\r\n" + b"y" * 40 for _ in range(20))
    events = feed_all(data, limits=SMALL)
    errors = [e for e in events if isinstance(e, FramingError)]
    assert errors and errors[0].error.code == "TOOBIG" and errors[0].error.fatal


def test_too_long_line_is_bad_before_its_end_arrives_and_is_not_kept() -> None:
    framer = logged_in(SMALL)
    framer.feed(b"a1 LOGIN " + b"x" * 200)
    event = framer.next_event()
    assert isinstance(event, FramingError)
    assert (event.error.tag, event.error.status, event.error.fatal) == ("a1", "BAD", False)
    assert "longer than 100" in event.error.message
    for _ in range(100):  # the rest of the line is dropped as it arrives
        framer.feed(b"y" * 1000)
        assert framer.next_event() is None
        assert framer.buffered == 0
    framer.feed(b"z\r\na2 NOOP\r\n")
    assert framer.next_event() == CommandFrame(b"a2 NOOP")
    assert not framer.closed


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_too_long_complete_line_is_bad_and_framing_goes_on(chunk: int | None) -> None:
    events = feed_all(b"a1 NOOP " + b"x" * 200 + b"\r\na2 NOOP\r\n", limits=SMALL, chunk=chunk)
    assert isinstance(events[0], FramingError) and not events[0].error.fatal
    assert events[0].error.tag == "a1"
    assert frames(events) == [b"a2 NOOP"]


@pytest.mark.parametrize("chunk", [None, 1, 5, 64])
def test_literal_announced_by_a_too_long_line_is_skipped_not_run(chunk: int | None) -> None:
    """The data of a {n+} at the end of a discarded line is on its way: it is skipped, and
    so is the rest of that command, whatever it contains."""
    payload = b"b DELETE INBOX\r\n"
    data = (
        b"a1 APPEND INBOX (" + b"x" * 200 + b") {%d+}\r\n" % len(payload) + payload
        + b" {3+}\r\nc\r\n\r\na2 NOOP\r\n"
    )
    events = feed_all(data, limits=SMALL, chunk=chunk)
    assert [type(e) for e in events] == [FramingError, CommandFrame]
    assert frames(events) == [b"a2 NOOP"]


def test_sync_literal_announced_by_a_too_long_line_ends_the_command() -> None:
    # The client waits for "+" that never comes: what follows is the next command.
    events = feed_all(b"a1 LOGIN " + b"x" * 200 + b" {5}\r\na2 NOOP\r\n", limits=SMALL)
    assert frames(events) == [b"a2 NOOP"]


def test_huge_literal_announced_by_a_too_long_line_is_fatal() -> None:
    events = feed_all(b"a1 LOGIN " + b"x" * 200 + b" {99999+}\r\n", limits=SMALL)
    assert isinstance(events[-1], FramingError) and events[-1].error.fatal


def test_append_continuation_carries_the_command_head() -> None:
    framer = logged_in()
    framer.feed(b"a1 APPEND INBOX (\\Seen) {11}\r\n")
    assert framer.next_event() == ContinuationNeeded(
        11, "a1", True, b"a1 APPEND INBOX (\\Seen) {11}\r\n"
    )
    framer.refuse_literal()  # answered NO: the client sends no literal
    framer.feed(b"a2 NOOP\r\n")
    assert framer.next_event() == CommandFrame(b"a2 NOOP")


# ------------------------------------------------------------------- before login


def test_append_before_login_gets_no_continuation() -> None:
    events = feed_all(b"a1 APPEND INBOX {67108864}\r\na2 NOOP\r\n", authenticated=False)
    assert not [e for e in events if isinstance(e, ContinuationNeeded)]
    assert isinstance(events[0], FramingError)
    assert (events[0].error.tag, events[0].error.status, events[0].error.fatal) == (
        "a1", "BAD", False,
    )
    assert frames(events) == [b"a2 NOOP"]


def test_non_sync_append_before_login_is_fatal_and_not_read() -> None:
    framer = CommandFramer()
    framer.feed(b"a1 APPEND INBOX {67108864+}\r\n" + b"x" * 1000)
    event = framer.next_event()
    assert isinstance(event, FramingError) and event.error.fatal
    assert framer.closed and framer.buffered == 0


def test_literal_minus_before_login() -> None:
    ok = feed_all(b"a LOGIN {4096+}\r\n" + b"x" * 4096 + b" y\r\n", authenticated=False)
    assert [type(e) for e in ok] == [CommandFrame]
    big = feed_all(b"a LOGIN {4097+}\r\n" + b"x" * 4097 + b" y\r\n", authenticated=False)
    assert isinstance(big[0], FramingError)
    assert (big[0].error.code, big[0].error.fatal) == ("TOOBIG", True)


def test_a_whole_command_before_login_is_small() -> None:
    limits = FramingLimits(max_login_command=100)
    sync = feed_all(b"a LOGIN {101}\r\n", limits=limits, authenticated=False)
    assert isinstance(sync[0], FramingError) and sync[0].error.code == "TOOBIG"
    parts = b"a LOGIN {40+}\r\n" + b"x" * 40 + b" {40+}\r\n" + b"y" * 40 + b"\r\na2 NOOP\r\n"
    events = feed_all(parts, limits=limits, authenticated=False)
    assert isinstance(events[0], FramingError) and events[0].error.code == "TOOBIG"
    long_line = feed_all(
        b"a LOGIN " + b"x" * 120 + b"\r\nb NOOP\r\n", limits=limits, authenticated=False
    )
    assert isinstance(long_line[0], FramingError)
    assert "longer than 100" in long_line[0].error.message
    assert frames(long_line) == [b"b NOOP"]


def test_line_at_the_limit_is_accepted() -> None:
    line = b"a NOOP" + b"x" * 94
    assert len(line) == 100
    assert frames(feed_all(line + b"\r\n", limits=SMALL, chunk=1)) == [line]


def test_untagged_garbage_errors_carry_no_tag() -> None:
    events = feed_all(b"+ {999999}\r\n", limits=SMALL)
    assert isinstance(events[0], FramingError)
    assert events[0].error.tag is None


def test_line_mode_ignores_literal_headers() -> None:
    framer = logged_in()
    framer.line_mode = True
    framer.feed(b"abc{5}\r\nDONE\r\n")
    assert drain(framer) == [CommandFrame(b"abc{5}"), CommandFrame(b"DONE")]


def test_discard_buffered_after_starttls() -> None:
    framer = logged_in()
    framer.feed(b"a STARTTLS\r\nb LOGIN injected x\r\n")
    assert framer.next_event() == CommandFrame(b"a STARTTLS")
    assert framer.discard_buffered() == len(b"b LOGIN injected x\r\n")
    assert framer.next_event() is None


def test_byte_by_byte_feeding_of_a_long_line_is_linear() -> None:
    framer = logged_in()
    line = b"a SEARCH TEXT " + b"x" * 60000
    for i in range(len(line)):
        framer.feed(line[i : i + 1])
        assert framer.next_event() is None
    framer.feed(b"\r\n")
    assert framer.next_event() == CommandFrame(line)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_line"):
        FramingLimits(max_line=0)
    with pytest.raises(ValueError, match="max_command"):
        FramingLimits(max_line=100, max_command=10)
    with pytest.raises(ValueError, match="max_login_command"):
        FramingLimits(max_login_command=0)
