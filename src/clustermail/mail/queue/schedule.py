"""When to try a queued recipient again, when to warn the sender, when to give up.

Pure functions of the policy, the attempt count and the times: no clock inside.
Defaults follow Postfix (maximal_queue_lifetime 5 d is longer; we use Exchange's 2 days,
and Exchange's and Postfix's 4 h delay warning).
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: First retry after ``base`` seconds, then doubling up to ``max_interval``.
    base: float = 1 * MINUTE
    factor: float = 2.0
    max_interval: float = 1 * HOUR
    #: One "delayed" notice to the sender once a message waited this long.
    delay_notice_after: float = 4 * HOUR
    #: Give up (bounce, 4.4.7) after this long in the queue.
    expire_after: float = 2 * DAY

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.max_interval < self.base:
            raise ValueError(
                f"retry policy: need base > 0, factor >= 1, max_interval >= base; got "
                f"base={self.base}, factor={self.factor}, max_interval={self.max_interval}"
            )
        if self.expire_after <= 0 or self.delay_notice_after <= 0:
            raise ValueError("retry policy: expire_after and delay_notice_after must be > 0")


def retry_interval(policy: RetryPolicy, attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt (1 = the first failure)."""
    if attempts < 1:
        return 0.0
    # Capped exponent: factor ** 1000 would overflow a float.
    exponent = min(attempts - 1, 64)
    return float(min(policy.max_interval, policy.base * policy.factor**exponent))


def next_attempt(policy: RetryPolicy, attempts: int, now: float, arrived: float) -> float:
    """When to try again after ``attempts`` failures; never later than the expiry, so an
    expired message is bounced on time rather than one interval late."""
    return min(now + retry_interval(policy, attempts), arrived + policy.expire_after)


def expired(policy: RetryPolicy, arrived: float, now: float) -> bool:
    return now - arrived >= policy.expire_after


def delay_notice_due(policy: RetryPolicy, arrived: float, now: float, notified: bool) -> bool:
    """One delay notice per message, once it waited ``delay_notice_after`` and before
    it expires (then the bounce says it all)."""
    return (
        not notified
        and now - arrived >= policy.delay_notice_after
        and not expired(policy, arrived, now)
    )
