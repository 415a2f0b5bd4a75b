"""The protocols' view of their two backends: recipient lookup and the mounted mail store.

Structural types (``Protocol``): SMTP (with its relay queue) and POP3 are written against
these, so they depend on neither implementation, and tests and benchmarks pass small
in-memory stand-ins. The real ones are :class:`clustermail.mail.directory.Directory`
(whose :class:`~clustermail.mail.directory.MailboxEntry` records satisfy
:class:`MailboxRef`) and :class:`clustermail.mail.store.resource.MailStoreResource`.

The IMAP server core takes narrower arguments of its own (an authenticator and a
mailbox locator, :mod:`clustermail.mail.imap.context`); the ``imap4`` resource builds
them from the :class:`MailStoreService` it depends on, as SMTP and POP3 find theirs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

from clustermail.mail.store import MailboxDatabase, MailStore


class MailboxRef(Protocol):
    """One final mailbox, as lookups return it: its address, its identity and where it
    is homed."""

    @property
    def address(self) -> str: ...
    @property
    def mailbox_id(self) -> str: ...  # the mailbox's name in its database
    @property
    def server(self) -> str: ...  # the virtual server it is homed on
    @property
    def storage_group(self) -> str: ...
    @property
    def database(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


class RecipientLookup(Protocol):
    """What the protocols ask the recipient directory (all reads)."""

    async def resolve(self, address: str) -> list[MailboxRef]: ...
    async def is_local_domain(self, domain: str) -> bool: ...
    async def mailbox(self, address: str) -> MailboxRef | None: ...
    async def authenticate(self, username: str, password: str) -> MailboxRef | None: ...
    async def send_as(self, mailbox: str, *, covering: Collection[str] = ()) -> set[str]: ...


@runtime_checkable
class MailStoreService(Protocol):
    """The ``mail_store`` resource as the protocol resources see it (mounted while online)."""

    @property
    def store(self) -> MailStore: ...
    @property
    def directory(self) -> RecipientLookup: ...
    def database_for(self, entry: MailboxRef) -> MailboxDatabase: ...
