"""A node agent that belongs to another process: it stops when that process is gone.

`clustermail up` starts the node agents of the local cluster with
``node run --stop-with PID`` (its own PID). Should `up` die without stopping
them — SIGKILL, an out-of-memory kill — the agents must not run on as orphans
holding the demo's addresses. A real machine's `node run` has no such owner and
runs on its own, as before.

The watch is a thread blocked on a pidfd of the owner (Linux ≥ 5.3), so it
notices the owner's exit at once, whatever the agent's event loop is doing,
and survives the owner's PID being reused. When the owner is gone it sends the
agent SIGTERM (the agent's own graceful stop: virtual servers offline, lease
revoked), and if the agent is still running ``grace`` seconds later it SIGKILLs
the agent's children (its resource hosts, whose own children die with them)
and the agent itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable

from clustermail.cluster.proctree import children_of

#: Seconds between the owner's exit and SIGKILL of an agent that has not stopped.
DEFAULT_GRACE = 10.0


class OwnerWatchError(Exception):
    """The owner cannot be watched (e.g. no such process)."""


def open_owner(pid: int) -> int:
    """A pidfd for ``pid``; raises :class:`OwnerWatchError` if it does not exist."""
    if pid <= 1:
        raise OwnerWatchError(f"--stop-with {pid}: not a process to follow")
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise OwnerWatchError(f"--stop-with {pid}: no such process") from None
    except OSError as exc:
        raise OwnerWatchError(f"--stop-with {pid}: cannot follow it: {exc.strerror}") from None


def _kill_children_and_self() -> None:
    me = os.getpid()
    for child in children_of(me):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    os.kill(me, signal.SIGKILL)


def stop_with(
    owner: int,
    grace: float = DEFAULT_GRACE,
    *,
    on_gone: Callable[[], None] | None = None,
) -> threading.Thread:
    """Starts the watch of process ``owner`` (a daemon thread) and returns it.

    ``on_gone`` runs in the watch thread when the owner exits (default: SIGTERM to
    this process); after ``grace`` more seconds this process's children and the
    process itself are SIGKILLed. Raises :class:`OwnerWatchError` at once if the
    owner does not exist (the caller must not start anything then).
    """
    fd = open_owner(owner)

    def watch() -> None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while not poller.poll():
                pass
        finally:
            os.close(fd)
        if on_gone is None:
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            on_gone()
        time.sleep(grace)
        _kill_children_and_self()

    thread = threading.Thread(target=watch, name="owner-watch", daemon=True)
    thread.start()
    return thread
