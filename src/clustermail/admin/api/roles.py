"""What every part of the admin API shares and the route table builds on: the
administrators' roles and the error every handler may raise (an answer other than
success). Apart from :mod:`.routing` so accounts and authentication need no routes."""

from __future__ import annotations

import enum
from typing import Any


class Role(enum.IntEnum):
    """Ordered: an operator may do everything a viewer may."""

    VIEWER = 1
    OPERATOR = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: use viewer or operator") from None


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, one-line message."""

    def __init__(self, status: int, code: str, message: str, *, challenge: bool = False,
                 retry_after: float | None = None) -> None:
        one_line = "; ".join(part.strip(" -") for part in message.splitlines() if part.strip())
        super().__init__(one_line)
        self.status = status
        self.code = code
        self.message = one_line
        #: A 401 that asks for HTTP Basic (``WWW-Authenticate``).
        self.challenge = challenge
        #: Seconds for ``Retry-After`` (429).
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}
