"""The admin service's own counters (one registry per process: one admin service)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

SERVICE_REGISTRY = CollectorRegistry(auto_describe=True)

API_REQUESTS = Counter("clustermail_api_requests", "API requests answered, by status code",
                       ["status"], registry=SERVICE_REGISTRY)
ADMIN_LOGINS_FAILED = Counter("clustermail_admin_logins_failed",
                              "Failed administrator logins (Basic or console)",
                              registry=SERVICE_REGISTRY)
FAILOVER_SECONDS = Histogram(
    "clustermail_failover_seconds",
    "How long a virtual server was not online when it moved to another node, as the admin "
    "service saw it", ["vs"], buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300),
    registry=SERVICE_REGISTRY)
FAILOVERS = Counter("clustermail_failovers", "Virtual servers that came online on another "
                    "node, as the admin service saw it", ["vs"], registry=SERVICE_REGISTRY)
