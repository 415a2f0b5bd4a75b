"""When the node agent takes a resource host for hung (pure: every time is given).

The agent pings each of its resource hosts every ``renew_interval`` over the
host's stdin, and the host answers from its event loop
(:mod:`clustermail.cluster.host_protocol`). A host whose answers stop for its
virtual server's ``host_timeout`` is hung: SIGSTOPped, or its loop stuck in a
blocking call or a CPU-bound bug. Only the agent can see that from outside,
and it kills the host (:mod:`clustermail.cluster.agent`).

Three things keep a healthy host from being killed:

* a new host has :data:`FIRST_ANSWER_ALLOWANCE` more for its first answer (it
  may be starting Python and importing the resource types under load);
* time during which the agent itself did not run (frozen, starved) does not
  count: the host's answers may be waiting, unread, in the pipe;
* a stop is bounded separately, by the sum of the resources' pending
  timeouts: a host that answers pings but never finishes going offline is
  killed when that budget is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds a new host has for its first answer, on top of its host_timeout: starting
#: Python and importing every resource type took 13 s on a 2-core machine at load 20.
FIRST_ANSWER_ALLOWANCE = 30.0
#: Seconds between SIGTERM and SIGKILL for a hung host (a stopped one gets SIGKILL at once).
KILL_GRACE = 1.0


def offline_budget(pending_timeouts: list[float], host_timeout: float) -> float:
    """Seconds a host may take to go offline: each resource's pending timeout in
    turn, and one host timeout for the host's own work."""
    return sum(pending_timeouts) + host_timeout


@dataclass
class HostWatch:
    """What the agent knows of one resource host's liveness (monotonic seconds)."""

    timeout: float
    #: When the host was given its virtual server.
    since: float
    answered_at: float | None = None
    #: Set when the agent asked the host to go offline: by then it must have exited.
    stop_deadline: float | None = None
    stop_budget: float = 0.0

    def answered(self, now: float) -> None:
        self.answered_at = now if self.answered_at is None else max(self.answered_at, now)

    def stopping(self, now: float, budget: float) -> None:
        """The host was asked to go offline; it has ``budget`` seconds (the first ask counts)."""
        if self.stop_deadline is None:
            self.stop_deadline, self.stop_budget = now + budget, budget

    def excuse(self, seconds: float) -> None:
        """The agent did not run for ``seconds``: they do not count against the host."""
        self.since += seconds
        if self.answered_at is not None:
            self.answered_at += seconds
        if self.stop_deadline is not None:
            self.stop_deadline += seconds

    def silent_for(self, now: float) -> float:
        return now - (self.answered_at if self.answered_at is not None else self.since)

    def verdict(self, now: float) -> str | None:
        """Why the host must be killed now ("did not answer for 5.2 s"), or None."""
        silent = self.silent_for(now)
        limit = self.timeout + (FIRST_ANSWER_ALLOWANCE if self.answered_at is None else 0.0)
        if silent > limit:
            return f"did not answer for {silent:.1f} s"
        if self.stop_deadline is not None and now > self.stop_deadline:
            return f"did not go offline within {self.stop_budget:g} s"
        return None
