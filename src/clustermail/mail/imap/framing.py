"""Incremental framing of the client's byte stream into whole commands.

IMAP commands are lines, except that a line ending in a literal header
``{n}`` (synchronizing) or ``{n+}`` (non-synchronizing, LITERAL+ / RFC 7888)
is followed by ``n`` bytes of data and then the rest of the command. The
framer is fed bytes as they arrive and hands out one event at a time, so the
server can act on a command (switch to IDLE, discard the buffer after
STARTTLS) before the next one is framed:

* :class:`CommandFrame` — one complete command, literals inline, final CRLF
  removed: the input of :func:`clustermail.mail.imap.parser.parse_command`.
* :class:`ContinuationNeeded` — a synchronizing literal was announced within
  the limits; the server must send ``+ ...`` before the client sends it.
* :class:`FramingError` — a limit was exceeded; answer with its error.

Limits, and what happens past them (nothing over a limit is ever buffered):

* A line (literals excluded) longer than ``max_line``: fatal. The end of the
  line is unknown, so resynchronising could run client data as commands.
* A synchronizing literal over its limit: ``NO [TOOBIG]`` for APPEND
  (RFC 7889) or ``BAD [TOOBIG]`` otherwise, not fatal. The client gets no
  ``+``, so it does not send the literal, and the command is over.
* A non-synchronizing literal over its limit: ``BAD [TOOBIG]``, fatal
  (RFC 7888 §4 lets the server close the connection rather than read and
  discard data that is already on its way).

APPEND's message may be ``max_literal`` (announce it as APPENDLIMIT); every
other literal (a password, a search string) at most ``max_argument_literal``;
a whole command at most ``max_command`` beyond its APPEND message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.lexer import TAG_RE


@dataclass(frozen=True, slots=True)
class FramingLimits:
    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024 * 1024
    max_argument_literal: int = 64 * 1024
    max_command: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_line", "max_literal", "max_argument_literal", "max_command"):
            if getattr(self, name) < 1:
                raise ValueError(f"FramingLimits.{name} must be positive")
        if self.max_command < self.max_line:
            raise ValueError(
                f"FramingLimits.max_command ({self.max_command}) must be at least "
                f"max_line ({self.max_line})"
            )


@dataclass(frozen=True, slots=True)
class CommandFrame:
    raw: bytes


@dataclass(frozen=True, slots=True)
class ContinuationNeeded:
    """Send ``+ <text>`` now: the client waits for it before sending ``size`` bytes."""

    size: int


@dataclass(frozen=True, slots=True)
class FramingError:
    error: ParseError


FrameEvent = CommandFrame | ContinuationNeeded | FramingError

_LITERAL_HEADER_RE = re.compile(rb"~?\{([0-9]{1,20})(\+?)\}\Z")
_COMMAND_WORDS_RE = re.compile(rb"[^ ]+ +(?:UID +)?([A-Za-z]+)")


class CommandFramer:
    """Turns a byte stream into command frames; pure, no I/O."""

    def __init__(self, limits: FramingLimits | None = None) -> None:
        self.limits = limits or FramingLimits()
        #: In line mode (AUTHENTICATE exchanges, IDLE) literal headers are plain text.
        self.line_mode = False
        self._buf = bytearray()
        self._scan = 0  # where the search for LF resumes, so byte-wise feeding stays linear
        self._parts: list[bytes] = []
        self._size = 0  # bytes of the current command so far
        self._literal_left = 0
        self._tag: str | None = None
        self._is_append = False
        self._closed = False

    # ----------------------------------------------------------------- input

    def feed(self, data: bytes) -> None:
        if not self._closed:
            self._buf += data

    def discard_buffered(self) -> int:
        """Drop unread input (after STARTTLS, RFC 3501 §6.2.1); the number of bytes dropped."""
        dropped = len(self._buf)
        self._buf.clear()
        self._scan = 0
        return dropped

    @property
    def closed(self) -> bool:
        """True after a fatal error: the server must close the connection."""
        return self._closed

    @property
    def in_command(self) -> bool:
        """True while part of a command has been framed (e.g. waiting for a literal)."""
        return bool(self._parts) or self._literal_left > 0

    # ---------------------------------------------------------------- output

    def next_event(self) -> FrameEvent | None:
        """The next event, or ``None`` until more bytes are fed."""
        while not self._closed:
            if self._literal_left:
                take = min(self._literal_left, len(self._buf))
                if not take:
                    return None
                self._parts.append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._literal_left -= take
                if self._literal_left:
                    return None
                continue
            end = self._buf.find(b"\n", self._scan)
            if end < 0:
                limit = self.limits.max_line + 2  # + CRLF
                if len(self._buf) > limit:
                    # Exactly limit + 1 bytes seen, however they were chunked.
                    return self._fatal(self._too_long_line(bytes(self._buf[: limit + 1])))
                self._scan = len(self._buf)
                return None
            line = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            self._scan = 0
            content = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if len(content) > self.limits.max_line:
                return self._fatal(self._too_long_line(line[: self.limits.max_line + 3]))
            if not self._parts:
                self._start_command(content)
            self._size += len(line)
            header = None if self.line_mode else _LITERAL_HEADER_RE.search(content)
            if header is None:
                self._parts.append(content)
                frame = b"".join(self._parts)
                self._reset()
                return CommandFrame(frame)
            event = self._literal(line, header)
            if event is not None:
                return event
        return None

    # -------------------------------------------------------------- internals

    def _literal(self, line: bytes, header: re.Match[bytes]) -> FrameEvent | None:
        """Start reading a literal; ``None`` means go on framing (non-synchronizing)."""
        size = int(header.group(1))
        sync = not header.group(2)
        limit = self.limits.max_literal if self._is_append else self.limits.max_argument_literal
        command_limit = self.limits.max_command + (
            self.limits.max_literal if self._is_append else 0
        )
        if size > limit or self._size + size > command_limit:
            what = "message" if self._is_append else "literal"
            error = ParseError(
                f"{what} of {size} bytes is larger than the limit of {limit} bytes",
                tag=self._tag,
                status="NO" if self._is_append and sync else "BAD",
                code="TOOBIG",
                fatal=not sync,
            )
            self._reset()
            if not sync:
                return self._fatal(error)
            return FramingError(error)
        self._parts.append(line)
        self._size += size
        self._literal_left = size
        return ContinuationNeeded(size) if sync else None

    def _start_command(self, first_line: bytes) -> None:
        # Only for error answers and the APPEND limit; the parser does the real work.
        tag = TAG_RE.match(first_line)
        self._tag = None
        if tag is not None and first_line[tag.end() : tag.end() + 1] == b" ":
            self._tag = tag.group(0).decode("ascii")
        words = _COMMAND_WORDS_RE.match(first_line)
        self._is_append = words is not None and words.group(1).upper() == b"APPEND"

    def _too_long_line(self, start: bytes) -> ParseError:
        if not self._parts:
            self._start_command(start)
        return ParseError(
            f"command line longer than {self.limits.max_line} bytes",
            tag=self._tag,
            fatal=True,
        )

    def _fatal(self, error: ParseError) -> FramingError:
        self._closed = True
        self._buf.clear()
        self._reset()
        return FramingError(error)

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._literal_left = 0
        self._tag = None
        self._is_append = False


__all__ = [
    "CommandFrame",
    "CommandFramer",
    "ContinuationNeeded",
    "FrameEvent",
    "FramingError",
    "FramingLimits",
]
