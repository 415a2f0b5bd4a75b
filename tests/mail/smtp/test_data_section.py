"""The DATA section read in chunks (mail/smtp/data.py) against aiosmtpd's line-by-line
reading: same end, same message, same verdict, for any bytes and any chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clustermail.mail.smtp.data import DOT_LINE, DataSection, DataState


def by_lines(stream: bytes, size_limit: int, line_limit: int) -> tuple[int, DataState, bytes]:
    """aiosmtpd's smtp_DATA loop (lines end at CRLF; a line longer than the limit is too
    long, more bytes than the size limit too much; the first verdict wins): where the
    section ends in ``stream``, its state and the message."""
    pos, size, state, lines = 0, 0, DataState.NOMINAL, []
    while True:
        end = stream.find(b"\r\n", pos)
        assert end >= 0, "the test streams always hold an end"
        line = stream[pos:end + 2]
        pos = end + 2
        if line == DOT_LINE:
            break
        size += len(line)
        if state is DataState.NOMINAL and size > size_limit:
            state = DataState.TOO_MUCH
        if state is DataState.NOMINAL and len(line) > line_limit:
            state = DataState.TOO_LONG
        if state is DataState.NOMINAL:
            lines.append(line[1:] if line.startswith(b".") else line)
    return pos, state, b"".join(lines)


def by_chunks(stream: bytes, size_limit: int, line_limit: int,
              reader_limit: int) -> tuple[int, DataState, bytes]:
    """What the server does: readuntil(DOT_LINE) with the reader's limit, and on
    LimitOverrunError the part asyncio says was consumed."""
    section = DataSection(size_limit, line_limit)
    pos = 0
    while pos < len(stream):
        found = stream.find(DOT_LINE, pos)
        if found >= 0 and found + len(DOT_LINE) - pos <= reader_limit:
            chunk = stream[pos:found + len(DOT_LINE)]
        elif found >= 0:  # found, but past the limit: what comes before it
            chunk = stream[pos:found]
        else:  # not found in the buffered bytes: all but the last two
            buffered = min(len(stream) - pos, reader_limit + 1)
            chunk = stream[pos:pos + buffered + 1 - len(DOT_LINE)]
        pos += len(chunk)
        if section.feed(chunk):
            message = section.message() if section.state is DataState.NOMINAL else b""
            return pos, section.state, message
    raise AssertionError("the end of the section was missed")


pieces = st.lists(st.sampled_from([b"a", b".", b"\r\n", b"\r", b"\n", b"..", b"x" * 40,
                                   b".\r\n", b"\r\n.\r\n", b"\r\n..\r\n"]), max_size=60)


@settings(max_examples=400, deadline=None)
@given(pieces, st.integers(10, 400), st.integers(4, 120), st.integers(8, 200))
def test_chunks_end_and_read_as_lines_do(parts: list[bytes], size_limit: int,
                                         line_limit: int, reader_limit: int) -> None:
    stream = b"".join(parts) + b"\r\n.\r\nQUIT\r\n"
    expected = by_lines(stream, size_limit, line_limit)
    got = by_chunks(stream, size_limit, line_limit, reader_limit)
    assert got[0] == expected[0]  # the same end: what follows is the next command
    if expected[1] is DataState.NOMINAL:
        assert got[1:] == expected[1:]
    else:
        assert got[1] is not DataState.NOMINAL  # refused either way (500 or 552)


def test_an_empty_message_and_dot_stuffing() -> None:
    section = DataSection(1000, 1000)
    assert section.feed(DOT_LINE) and section.message() == b""
    section = DataSection(1000, 1000)
    assert not section.feed(b"..a\r\nRegards.\r\n")  # a line ending in a dot goes on
    assert section.feed(b"...\r\n.\r\n")
    assert section.message() == b".a\r\nRegards.\r\n..\r\n"


def test_a_crlf_split_between_chunks_still_ends_a_line() -> None:
    section = DataSection(10_000, 6)
    assert not section.feed(b"abcd\r")  # 4 bytes + CRLF = 6: within the limit
    assert section.feed(b"\n.\r\n") and section.state is DataState.NOMINAL
    section = DataSection(10_000, 6)
    assert not section.feed(b"abcde\r")
    assert section.feed(b"\n.\r\n") and section.state is DataState.TOO_LONG
