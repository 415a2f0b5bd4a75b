"""The mail layer's counters (Prometheus), kept in the resource host's registry.

A resource host runs one virtual server, so these carry no ``vs`` label: the node
agent adds ``vs`` and ``node`` when it serves them (see :mod:`clustermail.metrics`).
``protocol`` is ``smtp``, ``imap4`` or ``pop3``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from clustermail.metrics import REGISTRY

SESSIONS = Counter("clustermail_sessions", "Client sessions accepted",
                   ["protocol"], registry=REGISTRY)
SESSIONS_ACTIVE = Gauge("clustermail_sessions_active", "Client sessions open now",
                        ["protocol"], registry=REGISTRY)
REFUSED = Counter("clustermail_connections_refused", "Connections refused by the "
                  "connection limits (max_connections, max_connections_per_client)",
                  ["protocol"], registry=REGISTRY)
LOGINS_FAILED = Counter("clustermail_logins_failed", "Failed logins (SMTP AUTH, IMAP4, "
                        "POP3)", registry=REGISTRY)
COMMANDS = Counter("clustermail_commands", "Protocol commands handled",
                   ["protocol", "command"], registry=REGISTRY)
COMMAND_SECONDS = Histogram(
    "clustermail_command_seconds", "How long a command took to answer",
    ["protocol", "command"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
             10.0),
    registry=REGISTRY)
RECEIVED = Counter("clustermail_messages_received", "Messages accepted by SMTP (250 after "
                   "the durable commit)", registry=REGISTRY)
DELIVERED = Counter("clustermail_messages_delivered", "Deliveries into local mailboxes "
                    "(one per recipient)", registry=REGISTRY)
RELAYED = Counter("clustermail_messages_relayed", "Recipients relayed to another server by "
                  "the queue", registry=REGISTRY)
BOUNCED = Counter("clustermail_messages_bounced", "Recipients given up on (a delivery "
                  "status notification was sent)", registry=REGISTRY)
QUEUE_MESSAGES = Gauge("clustermail_queue_messages", "Messages waiting in the relay queue",
                       registry=REGISTRY)
QUEUE_OLDEST = Gauge("clustermail_queue_oldest_seconds", "Age of the oldest queued message",
                     registry=REGISTRY)
DATABASE_BYTES = Gauge("clustermail_mailbox_database_bytes", "Size of a mailbox database "
                       "file and its write-ahead log", ["storage_group", "database"],
                       registry=REGISTRY)
LOG_BYTES = Gauge("clustermail_transaction_log_bytes", "Size of a mailbox database's "
                  "transaction log files", ["storage_group", "database"], registry=REGISTRY)


#: (protocol, COMMAND) -> its counter and histogram children. ``labels()`` takes a lock
#: and builds a key on every call, which showed in the POP3 RETR profile. It holds one
#: entry per child the registry holds anyway.
_COMMAND_CHILDREN: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def command(protocol: str, name: str, seconds: float) -> None:
    """One command handled (SMTP, IMAP4, POP3): counted, and its latency observed."""
    key = (protocol, name.upper())
    children = _COMMAND_CHILDREN.get(key)
    if children is None:
        children = (COMMANDS.labels(*key), COMMAND_SECONDS.labels(*key))
        _COMMAND_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)
