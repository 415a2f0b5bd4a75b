"""A password check under the :class:`~.auth_throttle.AuthThrottle`: the I/O shell that
SMTP, POP3 and IMAP4 share, so each protocol only maps the outcome to its own reply.

A login the directory can answer from its cache of verified logins (``cached``) is
answered without taking a verification slot: only a cache miss waits for the expensive
hash, under the throttle's in-flight limit (:meth:`.AuthThrottle.verify`).

The check runs as its own task and is shielded from the session: a client that hangs up
while its password is being hashed does not free its place in the queue early (the hash
keeps running in its thread), and its attempt still counts once the check ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, cast, runtime_checkable

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


@runtime_checkable
class CachedLogins(Protocol):
    """A password checker that can also answer from its cache of verified logins
    without hashing (the directory)."""

    async def authenticate_cached(self, username: str, password: str) -> Any | None: ...


def cache_of(
    checker: object, username: str, password: str
) -> Callable[[], Awaitable[Any | None]] | None:
    """The cache lookup to pass as ``cached`` when ``checker`` has one."""
    if not isinstance(checker, CachedLogins):
        return None
    return lambda: checker.authenticate_cached(username, password)


async def guarded_login(
    throttle: AuthThrottle,
    client: str,
    username: str,
    check: Callable[[], Awaitable[T | None]],
    *,
    cached: Callable[[], Awaitable[object]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Login[T]:
    """Runs ``check()`` (the principal, or None for a wrong password) if the throttle
    admits the attempt. A failure is answered only after the throttle's delay.

    ``cached()``, when given, returns the principal if the login cache vouches for the
    password and None otherwise (never a verdict of "wrong"); a hit is the answer, with
    no verification slot taken, and a miss goes on to ``check()`` under the limit."""
    attempt = throttle.begin(client, username, verify=cached is None)
    if isinstance(attempt, Refused):
        return await _refused(throttle, attempt, sleep)
    if cached is not None:
        try:
            # The same kind of principal as check() returns (both ask one directory).
            principal = cast("T | None", await cached())
        except asyncio.CancelledError:
            throttle.abandon(attempt)
            raise
        except Exception as exc:
            throttle.abandon(attempt)
            log.warning("login cache lookup for %r failed: %s: %s", username[:64],
                        type(exc).__name__, exc)
            return Login("error", retry_after=1.0)
        if principal is not None:
            throttle.success(attempt)
            return Login("ok", principal)
        attempt = throttle.verify(attempt)
        if isinstance(attempt, Refused):
            return await _refused(throttle, attempt, sleep)
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


async def _refused(
    throttle: AuthThrottle, refused: Refused, sleep: Callable[[float], Awaitable[None]]
) -> Login[T]:
    # Answered late, as a failure would be (Dovecot delays a penalised client's answers
    # too), so refused attempts cannot spin at wire speed; a returning user refused for a
    # full queue is told at once (retry_after 0).
    await sleep(min(refused.retry_after, throttle.max_delay))
    return Login(refused.reason, retry_after=refused.retry_after)


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
