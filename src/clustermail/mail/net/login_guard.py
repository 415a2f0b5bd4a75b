"""A password check under the :class:`~.auth_throttle.AuthThrottle`: the I/O shell that
SMTP, POP3 and IMAP4 share, so each protocol only maps the outcome to its own reply.

The check runs as its own task and is shielded from the session: a client that hangs up
while its password is being hashed does not free its place in the queue early (the hash
keeps running in its thread), and its attempt still counts once the check ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from clustermail.mail import metrics
from clustermail.mail.net.auth_throttle import Attempt, AuthThrottle, Refused

T = TypeVar("T")
log = logging.getLogger(__name__)

#: ``ok``: ``principal`` is set; ``failed``: wrong password (already delayed);
#: ``locked``/``busy``: refused without a check; ``error``: the check itself failed.
Outcome = Literal["ok", "failed", "locked", "busy", "error"]


@dataclass(frozen=True, slots=True)
class Login(Generic[T]):
    outcome: Outcome
    principal: T | None = None
    retry_after: float = 0.0


async def guarded_login(
    throttle: AuthThrottle,
    client: str,
    username: str,
    check: Callable[[], Awaitable[T | None]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Login[T]:
    """Runs ``check()`` (the principal, or None for a wrong password) if the throttle
    admits the attempt. A failure is answered only after the throttle's delay."""
    attempt = throttle.begin(client, username)
    if isinstance(attempt, Refused):
        # Answered late, as a failure would be (Dovecot delays a penalised client's
        # answers too), so refused attempts cannot spin at wire speed; a returning user
        # refused for a full queue is told at once (retry_after 0).
        await sleep(min(attempt.retry_after, throttle.max_delay))
        return Login(attempt.reason, retry_after=attempt.retry_after)
    delays: list[float] = []
    task = asyncio.ensure_future(check())
    task.add_done_callback(lambda t: _record(throttle, attempt, t, delays))
    try:
        principal = await asyncio.shield(task)
    except asyncio.CancelledError:
        raise  # the session ended; the task runs on and records the attempt
    except Exception as exc:
        log.warning("password check for %r failed: %s: %s", username[:64],
                    type(exc).__name__, exc)
        return Login("error", retry_after=1.0)
    if principal is None:
        await sleep(delays[0] if delays else throttle.base_delay)
        return Login("failed")
    return Login("ok", principal)


def _record(
    throttle: AuthThrottle, attempt: Attempt, task: asyncio.Future[T | None],
    delays: list[float],
) -> None:
    if task.cancelled() or task.exception() is not None:
        throttle.abandon(attempt)
    elif task.result() is None:
        metrics.LOGINS_FAILED.inc()
        delays.append(throttle.failure(attempt))
    else:
        throttle.success(attempt)
