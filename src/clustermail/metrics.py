"""The process's own Prometheus registry, for counters a resource host's resources keep
(messages, sessions, commands, queue lengths...).

Any layer may define metrics on :data:`REGISTRY` (like :mod:`clustermail.logutil`,
it belongs to no layer). A resource host sends its registry to its node agent over
the event pipe every few seconds (:mod:`clustermail.cluster.host_main`); the agent
serves it, labelled with the virtual server, beside its own metrics
(:mod:`clustermail.cluster.metrics`). Metric names start with ``clustermail_``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

#: No default process/GC collectors: the node agent's own metrics describe the process.
REGISTRY = CollectorRegistry(auto_describe=True)


def exposition() -> str:
    """This process's metrics in the Prometheus text format."""
    return generate_latest(REGISTRY).decode()
