"""systemd's service notification protocol, for `node run` under ``Type=notify``.

systemd passes a unix datagram socket in ``NOTIFY_SOCKET`` (a path, or an
abstract name written ``@name``) and, with ``WatchdogSec=``, the watchdog
period in ``WATCHDOG_USEC`` (and the PID it applies to in ``WATCHDOG_PID``).
The service sends ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` and ``STATUS=…``
lines as datagrams. A few lines of our own rather than a dependency (see
docs/decisions.md). Outside systemd every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    """Sends notifications to systemd when it asked for them; never raises."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        #: Seconds between watchdog pings: half of systemd's period; None without one.
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> None:
        if self.address is None:
            return
        # systemd may be restarting or the socket gone: the agent carries on regardless.
        with contextlib.suppress(OSError), \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(lines).encode(), self.address)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")
