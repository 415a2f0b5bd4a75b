"""Where the mail layer keeps its state in the coordination store.

Outside the cluster's prefix (:data:`clustermail.cluster.keys.PREFIX`) on
purpose: a user added must not wake every node agent, and a cluster view must
not read every mailbox.
"""

from __future__ import annotations

#: The recipient directory (domains, mailboxes, aliases, groups, storage plans);
#: layout in :mod:`clustermail.mail.directory.model`.
DIRECTORY = "/clustermail-directory/"
