"""Incremental framing of the client's byte stream into whole commands.

IMAP commands are lines, except that a line ending in a literal header
``{n}`` (synchronizing) or ``{n+}`` (non-synchronizing, RFC 7888) is followed
by ``n`` bytes of data and then the rest of the command. The framer is fed
bytes as they arrive and hands out one event at a time, so the server can act
on a command (switch to IDLE, discard the buffer after STARTTLS) before the
next one is framed:

* :class:`CommandFrame` — one complete command, literals inline, final CRLF
  removed: the input of :func:`clustermail.mail.imap.parser.parse_command`.
* :class:`ContinuationNeeded` — a synchronizing literal was announced within
  the limits; the server sends ``+ ...`` (or refuses it with
  :meth:`CommandFramer.refuse_literal`) before the client sends it.
* :class:`FramingError` — a limit was exceeded; answer with its error.

Limits, and what happens past them (nothing over a limit is ever buffered):

* A line (literals excluded) longer than ``max_line`` (Dovecot's
  ``imap_max_line_length``): ``BAD``, and the rest of the command is
  discarded as it arrives, up to the end of its line — and through any
  non-synchronizing literal that line announces, so literal data is never
  run as commands — then framing goes on, as Dovecot does.
* A synchronizing literal over its limit: ``NO [TOOBIG]`` for APPEND
  (RFC 7889) or ``BAD [TOOBIG]`` otherwise, not fatal. The client gets no
  ``+``, so it does not send the literal, and the command is over.
* A non-synchronizing literal over its limit: ``BAD [TOOBIG]``, fatal
  (RFC 7888 §4 lets the server close the connection rather than read and
  discard data that is already on its way).

APPEND's message may be ``max_literal`` (announce it as APPENDLIMIT); every
other literal (a password, a search string) at most ``max_argument_literal``;
a whole command at most ``max_command`` beyond its APPEND message.

Before login (:attr:`CommandFramer.authenticated` false) the limits are
tighter, so an anonymous client can make the server hold at most
``max_login_command`` bytes: a whole command, literals included, is at most
that; non-synchronizing literals follow LITERAL- (RFC 7888 §5: at most 4096
bytes); and APPEND is refused outright — ``BAD`` without a continuation for
``{n}``, a fatal ``BAD`` (the server closes the connection without reading
the message) for ``{n+}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.lexer import TAG_RE

#: RFC 7888 §5 (LITERAL-): the largest non-synchronizing literal a client may send.
LITERAL_MINUS_MAX = 4096


@dataclass(frozen=True, slots=True)
class FramingLimits:
    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024 * 1024
    max_argument_literal: int = 64 * 1024
    max_command: int = 1024 * 1024
    #: Before login: a whole command, literals included (Dovecot's login processes
    #: hold a few KiB per client).
    max_login_command: int = 8 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_line",
            "max_literal",
            "max_argument_literal",
            "max_command",
            "max_login_command",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FramingLimits.{name} must be a positive integer")
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
    """Send ``+ <text>`` now: the client waits for it before sending ``size`` bytes.

    For APPEND, ``head`` is the command up to and including the literal's header line,
    so the server can check the command before it invites the message."""

    size: int
    tag: str | None = None
    append: bool = False
    head: bytes = b""


@dataclass(frozen=True, slots=True)
class FramingError:
    error: ParseError


FrameEvent = CommandFrame | ContinuationNeeded | FramingError

LITERAL_HEADER_RE = re.compile(rb"~?\{([0-9]{1,20})(\+?)\}\Z")
_COMMAND_WORDS_RE = re.compile(rb"[^ ]+ +(?:UID +)?([A-Za-z]+)")
_TAIL = 32  # bytes of a discarded line kept to see whether it ends in a literal header


class CommandFramer:
    """Turns a byte stream into command frames; pure, no I/O."""

    def __init__(self, limits: FramingLimits | None = None) -> None:
        self.limits = limits or FramingLimits()
        #: In line mode (AUTHENTICATE exchanges, IDLE) literal headers are plain text.
        self.line_mode = False
        #: Set by the session at login: the limits of an anonymous client no longer apply.
        self.authenticated = False
        self._buf = bytearray()
        self._scan = 0  # where the search for LF resumes, so byte-wise feeding stays linear
        self._parts: list[bytes] = []
        self._size = 0  # bytes of the current command so far
        self._literal_left = 0
        self._tag: str | None = None
        self._is_append = False
        self._closed = False
        # Discarding the rest of a refused command: up to its line end (``_tail`` keeps the
        # line's last bytes, to find a literal header), through ``_skip_left`` literal bytes.
        self._discarding = False
        self._discard_literals = True
        self._tail = b""
        self._skip_left = 0

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

    @property
    def discarding(self) -> bool:
        """True while the rest of an overlong line (or the literal it announced) is being
        dropped as it arrives."""
        return self._discarding or self._skip_left > 0

    @property
    def buffered(self) -> int:
        """Bytes held for the command being framed (its parts and unread input)."""
        return len(self._buf) + sum(len(p) for p in self._parts)

    def refuse_literal(self) -> None:
        """The server answered the command instead of sending ``+`` for its literal
        (:class:`ContinuationNeeded`): the client does not send it, the command is over."""
        self._reset()

    # ---------------------------------------------------------------- output

    def next_event(self) -> FrameEvent | None:
        """The next event, or ``None`` until more bytes are fed."""
        while not self._closed:
            if self._skip_left:
                take = min(self._skip_left, len(self._buf))
                if not take:
                    return None
                del self._buf[:take]
                self._skip_left -= take
                continue
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
            if self._discarding:
                if end < 0:
                    self._tail = (self._tail + bytes(self._buf[-_TAIL:]))[-_TAIL:]
                    self._buf.clear()
                    self._scan = 0
                    return None
                tail = (self._tail + bytes(self._buf[max(0, end + 1 - _TAIL) : end + 1]))
                del self._buf[: end + 1]
                self._scan = 0
                error = self._discarded_line_end(_content(tail))
                if error is not None:
                    return error
                continue
            max_line = self._max_line()
            if end < 0:
                if len(self._buf) > max_line + 2:  # + CRLF
                    # Exactly max_line + 1 bytes seen, however they were chunked.
                    error = self._too_long_line(bytes(self._buf[: max_line + 1]))
                    self._tail = bytes(self._buf[-_TAIL:])
                    self._buf.clear()
                    self._scan = 0
                    self._discarding = True
                    return error
                self._scan = len(self._buf)
                return None
            line = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            self._scan = 0
            content = _content(line)
            if len(content) > max_line:
                error = self._too_long_line(line[: max_line + 3])
                self._discard_literals = not self.line_mode
                return self._discarded_line_end(content[-_TAIL:]) or error
            if not self._parts:
                self._start_command(content)
            self._size += len(line)
            header = None if self.line_mode else LITERAL_HEADER_RE.search(content)
            if header is None:
                if self._parts and not self.authenticated and self._size > self._max_command():
                    return self._refuse_command(self._too_large_command())
                self._parts.append(content)
                frame = b"".join(self._parts)
                self._reset()
                return CommandFrame(frame)
            event = self._literal(line, header)
            if event is not None:
                return event
        return None

    # -------------------------------------------------------------- internals

    def _max_line(self) -> int:
        if self.authenticated:
            return self.limits.max_line
        return min(self.limits.max_line, self.limits.max_login_command)

    def _max_command(self) -> int:
        if not self.authenticated:
            return self.limits.max_login_command
        return self.limits.max_command + (self.limits.max_literal if self._is_append else 0)

    def _literal(self, line: bytes, header: re.Match[bytes]) -> FrameEvent | None:
        """Start reading a literal; ``None`` means go on framing (non-synchronizing)."""
        size = int(header.group(1))
        sync = not header.group(2)
        if not self.authenticated and self._is_append:
            # No message before login: nothing to invite, and nothing to read for {n+}.
            error = ParseError("Log in first.", tag=self._tag, fatal=not sync)
            self._reset()
            return self._fatal(error) if not sync else FramingError(error)
        if self._is_append:
            limit = self.limits.max_literal
        elif self.authenticated:
            limit = self.limits.max_argument_literal
        else:
            limit = min(self.limits.max_argument_literal, self.limits.max_login_command)
        if not sync and not self.authenticated:
            limit = min(limit, LITERAL_MINUS_MAX)
        if size > limit or self._size + size > self._max_command():
            what = "message" if self._is_append else "literal"
            text = f"{what} of {size} bytes is larger than the limit of {limit} bytes"
            if size <= limit:
                text = f"command larger than the limit of {self._max_command()} bytes"
            error = ParseError(
                text,
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
        if not sync:
            return None
        if self._is_append:
            return ContinuationNeeded(size, self._tag, True, b"".join(self._parts))
        return ContinuationNeeded(size, self._tag)

    def _discarded_line_end(self, content: bytes) -> FramingError | None:
        """The end of a line being discarded (``content``: its last bytes, without CRLF).
        A non-synchronizing literal it announces is on its way: skip it and the rest of
        the command too. Anything else ends the command."""
        header = LITERAL_HEADER_RE.search(content) if self._discard_literals else None
        if header is None or header.group(2) != b"+":
            self._discarding = False  # a synchronizing literal is never sent without "+"
            self._discard_literals = True
            self._tail = b""
            return None
        size = int(header.group(1))
        limit = self.limits.max_literal if self.authenticated else LITERAL_MINUS_MAX
        if size > limit:
            return self._fatal(
                ParseError(
                    f"literal of {size} bytes is larger than the limit of {limit} bytes",
                    code="TOOBIG",
                    fatal=True,
                )
            )
        self._discarding = True
        self._tail = b""
        self._skip_left = size
        return None

    def _start_command(self, first_line: bytes) -> None:
        # Only for error answers and the APPEND limit; the parser does the real work.
        tag = TAG_RE.match(first_line)
        self._tag = None
        if tag is not None and first_line[tag.end() : tag.end() + 1] == b" ":
            self._tag = tag.group(0).decode("ascii")
        words = _COMMAND_WORDS_RE.match(first_line)
        self._is_append = words is not None and words.group(1).upper() == b"APPEND"

    def _too_long_line(self, start: bytes) -> FramingError:
        if not self._parts:
            self._start_command(start)
        error = ParseError(f"command line longer than {self._max_line()} bytes", tag=self._tag)
        self._discard_literals = not self.line_mode
        self._reset()
        return FramingError(error)

    def _too_large_command(self) -> ParseError:
        limit = self._max_command()
        return ParseError(f"command larger than {limit} bytes", tag=self._tag, code="TOOBIG")

    def _refuse_command(self, error: ParseError) -> FramingError:
        self._reset()
        return FramingError(error)

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


def _content(line: bytes) -> bytes:
    """A line without its line end (CRLF or LF)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


__all__ = [
    "LITERAL_HEADER_RE",
    "LITERAL_MINUS_MAX",
    "CommandFrame",
    "CommandFramer",
    "ContinuationNeeded",
    "FrameEvent",
    "FramingError",
    "FramingLimits",
]
