"""The DATA section read in chunks (mail/smtp/data.py) against aiosmtpd's line-by-line
reading: same end, same message, same verdict, for any bytes and any chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clustermail.mail.smtp.data import DOT_LINE, END, DataSection, DataState


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


def by_reader(stream: bytes, size_limit: int, line_limit: int, reader_limit: int,
              arrivals: list[int]) -> tuple[int, DataState, bytes]:
    """What ClusterSMTP._read_data does, with the stream arriving in pieces of the given
    sizes: up to the end at once when the buffer holds it within the limit (searching
    each buffered byte once), else asyncio's readuntil(DOT_LINE), which waits for more
    or gives up past the limit."""
    section = DataSection(size_limit, line_limit)
    sizes = iter(arrivals)
    pos, arrived, clean = 0, min(len(stream), next(sizes, len(stream))), 0
    while True:
        buffered = stream[pos:arrived]
        end = section.end_in(bytearray(buffered), max(0, clean - len(END) + 1))
        if 0 < end <= reader_limit:
            chunk = buffered[:end]
        else:
            clean = end - len(END) if end else len(buffered)
            while True:  # readuntil(DOT_LINE)
                buffered = stream[pos:arrived]
                found = buffered.find(DOT_LINE)
                if 0 <= found <= reader_limit:
                    chunk = buffered[:found + len(DOT_LINE)]
                    break
                if found > reader_limit or len(buffered) + 1 - len(DOT_LINE) > reader_limit:
                    chunk = buffered[:found if found >= 0 else len(buffered) + 1 - 3]
                    break
                assert arrived < len(stream), "the end of the section was missed"
                arrived = min(len(stream), arrived + next(sizes, len(stream)))
        pos += len(chunk)
        clean -= len(chunk)
        if section.feed(chunk):
            message = section.message() if section.state is DataState.NOMINAL else b""
            return pos, section.state, message


@settings(max_examples=600, deadline=None)
@given(pieces, st.integers(10, 400), st.integers(4, 120), st.integers(8, 200),
       st.lists(st.integers(1, 90), max_size=40))
def test_the_server_reads_up_to_the_end_as_lines_do(
    parts: list[bytes], size_limit: int, line_limit: int, reader_limit: int,
    arrivals: list[int],
) -> None:
    """The read up to a buffered end ends where the lines say, however the bytes arrive,
    and never past the first end: what follows (here more dot lines) is not the message."""
    stream = b"".join(parts) + b"\r\n.\r\nRSET\r\n\r\n.\r\n.\r\nQUIT\r\n"
    expected = by_lines(stream, size_limit, line_limit)
    got = by_reader(stream, size_limit, line_limit, reader_limit, arrivals)
    assert got[0] == expected[0]
    if expected[1] is DataState.NOMINAL:
        assert got[1:] == expected[1:]
    else:
        assert got[1] is not DataState.NOMINAL


def test_the_end_found_in_what_is_buffered() -> None:
    section = DataSection(1000, 1000)
    assert section.end_in(bytearray(b".\r\nQUIT\r\n")) == 3  # an empty message
    assert section.end_in(bytearray(b"a.\r\nb.\r\n.\r\nQUIT\r\n")) == 11
    assert section.end_in(bytearray(b"a.\r\nb.\r\n.\r\n"), start=9) == 0  # searched
    assert not section.feed(b"x\r")  # a CRLF split: the end begins in what was fed
    assert section.end_in(bytearray(b"\n.\r\n")) == 4
    assert section.end_in(bytearray(b".\r\n")) == 0  # after a lone CR, not a line end


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
