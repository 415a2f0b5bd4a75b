"""The store checks every kind of `validate` makes: how long to wait for it, how fast it
reads (kept apart so `validate` and `validate --cluster` share them without importing
each other)."""

from __future__ import annotations

import statistics
import time

from clustermail.admin.validate_report import Check
from clustermail.cluster.timing import LeaseTiming, lease_raised
from clustermail.coord import Store

#: Seconds allowed for reaching the store and each read of it.
STORE_TIMEOUT = 10.0
LATENCY_WARN = 0.05  # s per linearizable read


async def latency(store: Store, reads: int = 10) -> Check:
    times = []
    for _ in range(reads):
        t = time.monotonic()
        await store.get("/clustermail/config")
        times.append(time.monotonic() - t)
    p50, worst = statistics.median(times), max(times)
    result = "pass" if p50 <= LATENCY_WARN else "warn"
    return Check("store latency", result, f"read p50 {p50 * 1000:.1f} ms, max "
                 f"{worst * 1000:.1f} ms over {reads}"
                 + ("" if result == "pass" else f" (over {LATENCY_WARN * 1000:.0f} ms: leases "
                    "and failover will be slow)"))


async def lease_ttl(store: Store, timing: LeaseTiming) -> Check:
    """Grants (and revokes) a lease of the cluster's TTL as a node agent does: the store
    may grant longer (etcd: whole seconds, at least 1.5 election timeouts), and failover
    then takes that."""
    lease = await store.grant(timing.ttl, peers_expire=True)
    try:
        raised = lease_raised(timing.ttl, lease.ttl)
    finally:
        await store.revoke(lease.id)
    if raised is not None:
        return Check("lease TTL", "warn", raised)
    return Check("lease TTL", "pass", f"{lease.ttl:g} s granted as asked "
                 f"({timing.profile} timing)")
