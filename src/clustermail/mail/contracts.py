"""What the protocol servers need from the recipient directory and the mail store resource.

Structural types (``Protocol``): SMTP, POP3 and IMAP4 are written against these, so they
depend on neither implementation, and tests can pass small in-memory stand-ins. The real
ones are :class:`clustermail.mail.directory.Directory` and
:class:`clustermail.mail.store.resource.MailStoreResource`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from clustermail.mail.store import MailboxDatabase, MailStore


class MailboxEntry(Protocol):
    """One final mailbox of the directory."""

    @property
    def address(self) -> str: ...  # also the mailbox's name in its database
    @property
    def server(self) -> str: ...  # the virtual server it is homed on
    @property
    def storage_group(self) -> str: ...
    @property
    def database(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


class Directory(Protocol):
    async def resolve(self, address: str) -> list[MailboxEntry]: ...
    async def is_local_domain(self, domain: str) -> bool: ...
    async def mailbox(self, address: str) -> MailboxEntry | None: ...
    async def authenticate(self, username: str, password: str) -> MailboxEntry | None: ...
    async def send_as(self, mailbox: str) -> set[str]: ...


@runtime_checkable
class MailStoreService(Protocol):
    """The ``mail_store`` resource as the protocol resources see it (mounted while online)."""

    @property
    def store(self) -> MailStore: ...
    @property
    def directory(self) -> Directory: ...
    def database_for(self, entry: MailboxEntry) -> MailboxDatabase: ...
