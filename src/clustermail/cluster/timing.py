"""Lease timing profiles: how long a node lease lives and how often it is renewed.

A node keeps its lease alive every ``renew_interval``; it fences itself (kills
its resource hosts) when it has not renewed by ``deadline - safety_margin``,
and other nodes take its virtual servers only after the store expired the
lease, ``ttl`` after the last renewal. Failover time is therefore about
``ttl`` plus the leader's reaction and the start of the virtual server, so the
profiles are chosen from the failover targets:

* ``default``: ttl 2 s → failover p50 ≈ 2.5 s, p99 ≤ 5 s on one machine;
* ``fast``: ttl 1 s → failover p99 ≤ 1.5 s (etcd rounds a TTL up to its
  minimum, 2 s with its default election timeout of 1 s).

The rule checked at load time: one renewal plus one retry plus the margin must
fit inside the TTL, otherwise a single slow renewal would fence a healthy node.

The agent also pings each of its resource hosts every ``renew_interval``; a
host that answers none for its virtual server's ``host_timeout`` is hung and
killed. That timeout must span :data:`PINGS_BEFORE_HUNG` pings, so one late
answer is never taken for a hang.
"""

from __future__ import annotations

from dataclasses import dataclass

# A renewal that fails is retried once on the next tick before the node gives up.
RENEWALS_BEFORE_FENCE = 2
#: Pings (one per renew_interval) a resource host may miss before it is hung.
PINGS_BEFORE_HUNG = 3


class TimingError(ValueError):
    """Lease timing values that cannot work together; the message names the numbers."""


def _fmt(seconds: float) -> str:
    return f"{seconds:g} s"


def timing_problems(ttl: float, renew_interval: float, safety_margin: float) -> list[str]:
    """Every reason why these lease timings are unsafe, as sentences naming the numbers."""
    problems = [
        f"{name} must be greater than 0 (got {value:g})"
        for name, value in (
            ("ttl", ttl),
            ("renew_interval", renew_interval),
            ("safety_margin", safety_margin),
        )
        if value <= 0
    ]
    if problems:
        return problems
    needed = RENEWALS_BEFORE_FENCE * renew_interval + safety_margin
    if needed >= ttl:
        problems.append(
            f"renew_interval {_fmt(renew_interval)} x {RENEWALS_BEFORE_FENCE} (a renewal and "
            f"one retry) + safety_margin {_fmt(safety_margin)} = {_fmt(round(needed, 6))} "
            f"must be less than ttl {_fmt(ttl)}"
        )
    return problems


def host_timeout_problem(host_timeout: float, renew_interval: float) -> str | None:
    """Why ``host_timeout`` is too short for this renew interval, naming the numbers."""
    needed = PINGS_BEFORE_HUNG * renew_interval
    if host_timeout >= needed:
        return None
    return (
        f"host_timeout {_fmt(host_timeout)} must be at least {PINGS_BEFORE_HUNG} x "
        f"renew_interval {_fmt(renew_interval)} = {_fmt(round(needed, 6))} (the agent pings "
        "each resource host every renew_interval; a host is hung only after missing "
        f"{PINGS_BEFORE_HUNG} pings)"
    )


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Node lease timing in seconds; ``profile`` is "default", "fast" or "custom"."""

    ttl: float
    renew_interval: float
    safety_margin: float
    profile: str = "custom"

    def __post_init__(self) -> None:
        problems = timing_problems(self.ttl, self.renew_interval, self.safety_margin)
        if problems:
            raise TimingError("; ".join(problems))

    @property
    def fence_after(self) -> float:
        """Seconds after the last renewal at which the holder must stop its resources."""
        return self.ttl - self.safety_margin

    @property
    def host_grace(self) -> float:
        """How long after the agent's own fence deadline a resource host fences itself.

        The agent kills its hosts at its deadline; a host's own watchdog is the backstop
        for an agent that is frozen and cannot. Were both deadlines one instant, a renewal
        landing just before it would race the relay of the new deadline to the host, and
        a healthy host would fence. A quarter of the margin still leaves three quarters
        of it before the store can expire the lease."""
        return self.safety_margin / 4

    @property
    def peer_check_interval(self) -> float:
        """How often the leader's agent (and its deputy) asks the store whether a node's
        lease went unrenewed for its TTL (``peer_expiry``): what it adds to a failover
        at most."""
        return self.renew_interval / 3

    def to_dict(self) -> str | dict[str, float]:
        """A profile name when it is an unchanged profile, else the three numbers."""
        if PROFILES.get(self.profile) == self:
            return self.profile
        return {
            "ttl": self.ttl,
            "renew_interval": self.renew_interval,
            "safety_margin": self.safety_margin,
        }


DEFAULT_TIMING = LeaseTiming(ttl=2.0, renew_interval=0.4, safety_margin=0.5, profile="default")
FAST_TIMING = LeaseTiming(ttl=1.0, renew_interval=0.15, safety_margin=0.25, profile="fast")

PROFILES: dict[str, LeaseTiming] = {"default": DEFAULT_TIMING, "fast": FAST_TIMING}


def lease_raised(asked: float, granted: float) -> str | None:
    """What to tell the operator when the store granted a longer lease than the timing
    asks for (etcd counts whole seconds and raises a TTL under 1.5 election timeouts to
    that): a failed node then holds its virtual servers that much longer. The agent's
    own deadlines still follow the shorter TTL, which is the safe side. None when not."""
    if granted <= asked + 1e-6:
        return None
    return (f"the store granted a {granted:g} s lease for the {asked:g} s asked: a failed "
            f"node's virtual servers move after ~{granted:g} s, not {asked:g} s (etcd "
            "raises a TTL under 1.5 election timeouts to that: lower --election-timeout, "
            "or use a timing profile with a longer TTL)")


def custom_timing(ttl: float, renew_interval: float, safety_margin: float) -> LeaseTiming:
    """Explicit timings; raises :class:`TimingError` naming the numbers when unsafe."""
    return LeaseTiming(
        ttl=float(ttl),
        renew_interval=float(renew_interval),
        safety_margin=float(safety_margin),
        profile="custom",
    )
