"""The resource host's fence timer (a thread, so a blocked event loop cannot delay it)."""

from __future__ import annotations

import threading
import time

from clustermail.cluster.procutil import DeadlineWatchdog


def test_a_deadline_that_passed_is_not_moved_by_one_read_late() -> None:
    """A later deadline read after the current one passed (the host was frozen while
    it waited in the pipe) comes too late: the fence still happens."""
    fired = threading.Event()
    dog = DeadlineWatchdog(fired.set)
    dog.set_deadline(time.monotonic() - 0.01)
    assert dog.expired()
    dog.set_deadline(time.monotonic() + 30)
    assert dog.expired()  # not moved
    assert fired.wait(5), "the fence did not happen"
    dog.stop()


def test_deadlines_in_time_move_it_later_only() -> None:
    fired = threading.Event()
    dog = DeadlineWatchdog(fired.set)
    dog.set_deadline(time.monotonic() + 30)
    dog.set_deadline(time.monotonic() + 60)
    dog.set_deadline(time.monotonic() + 1)  # older news: ignored
    assert not dog.expired()
    assert not fired.wait(1.5)
    dog.stop()
    assert not dog.expired()  # stopped: never due
