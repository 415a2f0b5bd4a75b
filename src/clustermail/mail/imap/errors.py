"""The typed errors of the IMAP protocol layer.

The server turns a :class:`ParseError` into exactly one response line with
:func:`clustermail.mail.imap.response.render_parse_error`; nothing else may
escape the parser or the framer, whatever bytes a client sends.
"""

from __future__ import annotations

from typing import Literal


class ImapProtocolError(Exception):
    """Base of every error raised by the pure IMAP protocol layer."""


class ParseError(ImapProtocolError):
    """A command (or line) that cannot be accepted, with what to answer.

    ``tag`` is the command's tag when it could be read (answer ``TAG BAD ...``),
    ``None`` when it could not (answer ``* BAD ...``). ``status`` is ``BAD`` for
    syntax errors and ``NO`` for well-formed commands that we refuse (unknown
    charset, message too big). ``code`` is a response code without brackets
    (``TOOBIG``, ``BADCHARSET (US-ASCII UTF-8)``). ``fatal`` means the framing
    is lost and the connection must be closed after answering.
    """

    def __init__(
        self,
        message: str,
        *,
        tag: str | None = None,
        status: Literal["BAD", "NO"] = "BAD",
        code: str | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.status: Literal["BAD", "NO"] = status
        self.code = code
        self.fatal = fatal

    def with_tag(self, tag: str) -> ParseError:
        """The same error, answered with ``tag`` (used once the tag is known)."""
        return ParseError(
            self.message, tag=tag, status=self.status, code=self.code, fatal=self.fatal
        )

    def __repr__(self) -> str:
        return (
            f"ParseError({self.message!r}, tag={self.tag!r}, status={self.status!r}, "
            f"code={self.code!r}, fatal={self.fatal!r})"
        )
