"""The mail layer's resource types, registered with the resource host.

A virtual server's spec lists this module under "plugins"; the resource host
imports it, and each import below registers one type (mail_store, smtp, pop3,
imap4). Their property schemas, for configuration validation, are registered
by :mod:`clustermail.mail.schemas`.
"""

from __future__ import annotations

# Each import registers: the property schemas, then one resource type per module.
import clustermail.mail.imap.resource
import clustermail.mail.pop3.resource
import clustermail.mail.schemas
import clustermail.mail.smtp.resource
import clustermail.mail.store.resource  # noqa: F401
