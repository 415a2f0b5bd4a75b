"""The recipient directory: domains, mailboxes, aliases and distribution groups.

It lives in the coordination store (``clustermail.mail.keys.DIRECTORY``) so
every node sees the same directory and a virtual server finds its users
wherever it runs. Layout and records: :mod:`.model`.

Writes that must not collide are compare-and-swap transactions: creating a
recipient compares its address absent under all three kinds (one address is
one mailbox, alias or group), and "touches" its domain's key (same value,
new mod revision), so removing a domain, which compares that mod revision,
can never race with a recipient being added to it.

Reads go to the store, or to a watch-fed local copy once :meth:`start_cache`
ran (resource hosts do; admin commands do not).
"""

from __future__ import annotations

from clustermail.mail.directory.databases import DatabaseRecords
from clustermail.mail.directory.disconnected import DisconnectedMailboxes
from clustermail.mail.directory.lookups import Lookups
from clustermail.mail.directory.recipients import Recipients


class Directory(Lookups, Recipients, DisconnectedMailboxes, DatabaseRecords):
    """See the module docstring. Every method is safe to call concurrently.

    Its parts: :mod:`.access` (reads through the cache or the store, the write helpers),
    :mod:`.lookups` (what the protocols ask), :mod:`.recipients` (the administrator's
    changes), :mod:`.storage_plans` (storage groups and databases per virtual server)
    , :mod:`.disconnected` (mailboxes no address points to) and :mod:`.databases` (the
    databases each virtual server created).
    """
