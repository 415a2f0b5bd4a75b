"""The DATA section of an SMTP transaction, taken in chunks instead of line by line.

aiosmtpd reads DATA one line at a time (one ``readuntil`` and a few list operations per
line: 300 awaits for a 20 KB message, the largest cost of ingesting it). The server reads
up to the section's end at once when it has arrived (:meth:`DataSection.end_in`), else up
to each ``.<CRLF>`` (:meth:`ClusterSMTP.smtp_DATA`), and :class:`DataSection` does the
rest without I/O, with aiosmtpd's rules: the section ends at a line holding a
lone dot (RFC 5321 4.1.1.4), a line longer than ``line_limit`` (CRLF included) makes it
"too long" (500), more than ``size_limit`` bytes make it "too much" (552), whichever comes
first; past either the bytes are read and dropped. Every byte is looked at a constant
number of times, in C (``bytes.split``, ``bytes.replace``).
"""

from __future__ import annotations

from enum import Enum

#: What each chunk is read up to; the section ends where it follows a line end.
DOT_LINE = b".\r\n"
#: The section's end: a dot line after a line end.
END = b"\r\n" + DOT_LINE


class DataState(Enum):
    NOMINAL = "nominal"
    TOO_LONG = "too long"  # a line over the limit: 500 once the section has been read
    TOO_MUCH = "too much"  # over the size limit: 552 once the section has been read


class DataSection:
    """One DATA section, fed the chunks read from the client in order."""

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit
        self.line_limit = line_limit
        self.state = DataState.NOMINAL
        self.size = 0  # bytes before the final dot line, as aiosmtpd counts them
        self._parts: list[bytes] = []
        self._tail = b"\r\n"  # the last two bytes seen (the DATA command's line end first)
        self._open = 0  # bytes of the line not ended yet
        self._open_cr = False  # ... and whether its last byte is a CR

    def feed(self, chunk: bytes) -> bool:
        """Adds ``chunk``; True once it ended the section (its last three bytes are then
        the dot line, which is not part of the message)."""
        if chunk.endswith(DOT_LINE):
            body = chunk[: -len(DOT_LINE)]
            if (self._tail + body)[-2:] == b"\r\n":
                self._add(body)
                return True
        self._add(chunk)
        return False

    def end_in(self, data: bytes | bytearray, start: int = 0) -> int:
        """How many bytes of ``data`` (what follows the bytes fed so far) make up the rest
        of the section, its final dot line included; 0 if its end is not in ``data``
        (searched from ``start``: the caller knows the bytes before it hold no
        ``<CRLF>.<CRLF>``). Feeding them ends the section. The end may begin in the last
        two bytes fed (a dot line right after a line end fed before, or a CRLF split
        between the two); it cannot begin earlier, as what was fed ends at a dot line or
        is what asyncio's ``readuntil`` gives up on, which keeps any such start in the
        reader."""
        if self._tail == b"\r\n" and data.startswith(DOT_LINE):
            return len(DOT_LINE)
        if self._tail.endswith(b"\r") and data.startswith(b"\n" + DOT_LINE):
            return 1 + len(DOT_LINE)
        found = data.find(END, start)
        return found + len(END) if found >= 0 else 0

    def message(self) -> bytes:
        """The message, dot-stuffing undone (RFC 5321 4.5.2); only in state NOMINAL."""
        if self.state is not DataState.NOMINAL:
            raise ValueError(f"the DATA section was {self.state.value}")
        raw = b"".join(self._parts)
        if raw.startswith(b"."):
            raw = raw[1:]
        return raw.replace(b"\r\n.", b"\r\n")

    def _add(self, data: bytes) -> None:
        if not data:
            return
        self._tail = (self._tail + data)[-2:]
        self.size += len(data)
        if self.state is not DataState.NOMINAL:
            return
        if self.size_limit and self.size > self.size_limit:
            self._over(DataState.TOO_MUCH)
            return
        if self._too_long(data):
            self._over(DataState.TOO_LONG)
            return
        self._parts.append(data)

    def _over(self, state: DataState) -> None:
        self.state = state
        self._parts.clear()  # nothing more is kept: this message will be refused

    def _too_long(self, data: bytes) -> bool:
        """Tracks line lengths across chunks; True once a line passes the limit."""
        limit = self.line_limit
        if self._open_cr and data.startswith(b"\n"):  # a CRLF split between two chunks
            if self._open + 1 > limit:
                return True
            data, self._open = data[1:], 0
        pieces = data.split(b"\r\n")
        first = self._open + len(pieces[0])
        if len(pieces) == 1:
            self._open = first
        else:
            if first + 2 > limit or max(map(len, pieces[1:-1]), default=0) + 2 > limit:
                return True
            self._open = len(pieces[-1])
        self._open_cr = data.endswith(b"\r")
        return self._open > limit
