"""Where the mail layer keeps its state in the coordination store.

Outside the cluster's prefix (:data:`clustermail.cluster.keys.PREFIX`) on
purpose: a user added must not wake every node agent, and a cluster view must
not read every mailbox.
"""

from __future__ import annotations

#: The recipient directory (domains, mailboxes, aliases, groups, storage plans);
#: layout in :mod:`clustermail.mail.directory.model`.
DIRECTORY = "/clustermail-directory/"

#: Store operations asked of a virtual server's owner (backup, restore, reset, recovery):
#: ``<vs>/<id>`` -> :class:`clustermail.mail.backup.requests.StoreRequest`. The owner's
#: mail_store resource claims and runs them; the CLI (or the API) waits on the record.
REQUESTS = "/clustermail-requests/"

#: ``<vs>`` -> the slots of the virtual server's backup schedule already taken
#: (:class:`clustermail.mail.backup.requests.ScheduleRecord`), so a scheduled backup runs
#: once whichever node owns the virtual server.
SCHEDULES = "/clustermail-backup-schedule/"

#: ``<vs>/<storage group>/<database>`` -> the database's id, recorded when it was first
#: mounted (:mod:`clustermail.mail.directory.databases`): what tells a lost database from
#: a new one when a disk comes up empty. Not under the directory's prefix: the owner
#: writes it, and directory changes (which wake every mail store) are the administrator's.
DATABASES = "/clustermail-databases/"
