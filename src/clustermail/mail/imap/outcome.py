"""How an IMAP command ends: :class:`Done` (tagged OK), :class:`Reply` (tagged NO or
BAD, raised through :func:`no` / :func:`bad`), or the end of the connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NoReturn


@dataclass(frozen=True, slots=True)
class Done:
    """``tag OK [code] text``."""

    text: str
    code: str | None = None


class Reply(Exception):
    """Ends a command with ``tag NO|BAD [code] text``."""

    def __init__(self, status: Literal["NO", "BAD"], text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status: Literal["NO", "BAD"] = status
        self.text = text
        self.code = code


def no(text: str, code: str | None = None) -> NoReturn:
    raise Reply("NO", text, code)


def bad(text: str, code: str | None = None) -> NoReturn:
    raise Reply("BAD", text, code)


class SessionClosed(Exception):
    """The connection is over (EOF, LOGOUT, timeout, fatal error)."""


class AlreadyAnswered(Exception):
    """The command sent its tagged answer itself (STARTTLS, before the handshake)."""
