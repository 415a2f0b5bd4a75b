"""The recipient directory: domains, mailboxes, aliases, distribution groups and the
storage plan of each virtual server, kept in the coordination store.

* :mod:`.service` — :class:`Directory`, assembled from :mod:`.access` (reads through the
  cache or the store; compare-and-swap writes), :mod:`.lookups` (what the protocols ask),
  :mod:`.recipients` (the administrator's changes), :mod:`.storage_plans` and
  :mod:`.disconnected` (mailboxes no address points to);
* :mod:`.model` — the records, their JSON form, key layout and errors (pure);
* :mod:`.cache` — the watch-fed local copy resource hosts read from;
* :mod:`.addresses` — mail address syntax and lookup keys (pure);
* :mod:`.passwords` — argon2id hashes, computed off the event loop.
"""

from clustermail.mail.directory.model import (
    AddressTakenError,
    AliasEntry,
    ConflictError,
    DirectoryError,
    DisconnectedEntry,
    DomainEntry,
    GroupEntry,
    InUseError,
    InvalidRequestError,
    MailboxEntry,
    NotFoundError,
    UnknownDomainError,
)
from clustermail.mail.directory.service import Directory

__all__ = [
    "AddressTakenError",
    "AliasEntry",
    "ConflictError",
    "Directory",
    "DirectoryError",
    "DisconnectedEntry",
    "DomainEntry",
    "GroupEntry",
    "InUseError",
    "InvalidRequestError",
    "MailboxEntry",
    "NotFoundError",
    "UnknownDomainError",
]
