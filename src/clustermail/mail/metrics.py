"""The mail layer's counters (Prometheus), kept in the resource host's registry.

A resource host runs one virtual server, so these carry no ``vs`` label: the node
agent adds ``vs`` and ``node`` when it serves them (see :mod:`clustermail.metrics`).
``protocol`` is ``smtp``, ``imap4`` or ``pop3``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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


#: Upper bounds (seconds) of clustermail_command_seconds' buckets.
COMMAND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


class CommandMetrics(Collector):
    """``clustermail_commands`` (a counter) and ``clustermail_command_seconds`` (a
    histogram), by protocol and command, kept as plain numbers and turned into metric
    families when scraped. prometheus_client's children take a lock per update and walk
    every bucket: 1–2 µs a command, which showed in the POP3 RETR profile (a whole RETR
    is ~16 µs). Updated on the event loop thread only; a scrape from another thread
    copies each row at once (one C call under the interpreter lock), so a command's
    count, bucket and sum agree."""

    def __init__(self) -> None:
        #: (protocol, COMMAND) -> [sum of seconds, count per bucket (not cumulative),
        #: count above the largest bound].
        self._rows: dict[tuple[str, str], list[float]] = {}

    def observe(self, protocol: str, name: str, seconds: float) -> None:
        key = (protocol, name.upper())
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0.0] * (len(COMMAND_BUCKETS) + 2)
        row[0] += seconds
        row[1 + bisect_left(COMMAND_BUCKETS, seconds)] += 1

    def describe(self) -> Iterator[Metric]:
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        yield from self._families({key: list(row) for key, row in list(self._rows.items())})

    @staticmethod
    def _families(rows: dict[tuple[str, str], list[float]]) -> Iterator[Metric]:
        labels = ["protocol", "command"]
        counts = CounterMetricFamily("clustermail_commands", "Protocol commands handled",
                                     labels=labels)
        seconds = HistogramMetricFamily("clustermail_command_seconds",
                                        "How long a command took to answer", labels=labels)
        for key, row in sorted(rows.items()):
            cumulative = list(accumulate(row[1:]))
            counts.add_metric(key, cumulative[-1])
            seconds.add_metric(
                key, [(str(b), c) for b, c in zip(COMMAND_BUCKETS, cumulative, strict=False)]
                + [("+Inf", cumulative[-1])], sum_value=row[0])
        yield counts
        yield seconds


COMMANDS = CommandMetrics()
REGISTRY.register(COMMANDS)


def command(protocol: str, name: str, seconds: float) -> None:
    """One command handled (SMTP, IMAP4, POP3): counted, and its latency observed."""
    COMMANDS.observe(protocol, name, seconds)
