"""The one error type the admin edge prints: one clear line, non-zero exit."""

from __future__ import annotations


class AdminError(Exception):
    """A request that cannot be carried out; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotFoundError(AdminError):
    """A node, virtual server or resource name that the cluster does not have."""


class InvalidRequestError(AdminError):
    """A request whose values cannot be used (the configuration it would make is invalid)."""
