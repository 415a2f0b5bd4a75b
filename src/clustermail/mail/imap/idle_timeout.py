"""The session inactivity timeout (IDLE included) and IDLE's keepalive interval: their
defaults and the values accepted.

The ``imap4`` resource reads its ``idle_timeout`` property with
``properties.number("idle_timeout", DEFAULT, minimum=MINIMUM)``; the configuration
check calls :func:`check_idle_timeout` with the same bound, so a value the resource
would refuse on every node is refused by ``clustermail config check`` first.
"""

from __future__ import annotations

from clustermail.cluster.model import PropertyValue

#: RFC 3501 §5.4: a server's inactivity timer is at least 30 minutes.
DEFAULT = 30 * 60.0
#: Shorter timeouts than the RFC's are allowed (tests use them), but a timer is needed.
MINIMUM = 0.1
#: Seconds between the keepalives (``* OK Still here``) of an idling session: Dovecot's
#: imap_idle_notify_interval. Same minimum.
KEEPALIVE = 120.0


def check_idle_timeout(value: PropertyValue) -> str | None:
    """None for a valid ``idle_timeout``, else what was expected (a property check)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= MINIMUM
    return None if ok else f"a number >= {MINIMUM:g} (seconds)"
