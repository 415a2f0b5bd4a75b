"""Process plumbing: parent-death signals, process groups, killing by pid.

Linux only (prctl). The rule that keeps failover safe: a child must never
outlive the process responsible for it. Three mechanisms back each other up:

* ``PR_SET_PDEATHSIG``: the kernel signals a child when the *thread* that
  forked it exits. So fork from a thread that lives as long as the process
  (the main thread; asyncio's subprocess functions fork in the loop thread).
* Each service runs in its own process group, so one ``killpg`` reaches the
  helpers it forked too.
* :data:`live_groups` lists every group started here, so an emergency exit can
  SIGKILL them all synchronously, without awaiting anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import threading
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

#: Process groups started by this process and not yet known to be gone.
live_groups: set[int] = set()


def set_parent_death_signal(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> None:
    """Asks the kernel to send ``sig`` to this process when its parent dies.

    If the parent already died before the call (the process was reparented),
    the signal would never come: when ``expected_parent`` is given and is no
    longer the parent, the signal is sent at once.
    """
    if _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if expected_parent is not None and os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)


def child_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that sets the parent-death signal in a forked child.

    It runs between fork and exec, where only async-signal-safe work is sane:
    it makes one pre-resolved foreign call and compares two integers.
    """
    parent = os.getpid()
    prctl = _prctl
    kill, getppid, getpid = os.kill, os.getppid, os.getpid

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if getppid() != parent:  # the parent died before the prctl took effect
            kill(getpid(), sig)

    return preexec


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signals a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def kill_all_groups(sig: int = signal.SIGKILL) -> None:
    """SIGKILLs every process group in :data:`live_groups` at once (emergency)."""
    for pgid in list(live_groups):
        kill_group(pgid, sig)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may
    # itself contain spaces or parentheses.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP, a debugger): it cannot act on SIGTERM."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"T", b"t")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Waits up to ``timeout`` s for ``pids`` to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Signals one process; False when it no longer exists."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        return True
    return False


class DeadlineWatchdog:
    """Calls ``on_expire`` from its own thread once ``time.monotonic()`` passes
    the deadline, unless the deadline is moved first. A thread, not a loop
    timer, so a blocked event loop cannot postpone a fence."""

    def __init__(self, on_expire: Callable[[], None]) -> None:
        self._on_expire = on_expire
        self._deadline: float | None = None
        self._stopped = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def set_deadline(self, deadline: float) -> None:
        """Moves the deadline later (never earlier: the agent's deadlines only grow, and
        an old one read late must not undo a newer one). Once the deadline has passed
        nothing moves it: a later one read after the fact (the host was frozen or
        starved while it waited in the pipe) comes too late, the fence is due."""
        with self._cond:
            if self._deadline is not None and (deadline <= self._deadline or
                                               time.monotonic() >= self._deadline):
                return
            self._deadline = deadline
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fence-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def expired(self) -> bool:
        """The deadline has passed (and the watchdog was not stopped). Lock-free, so a
        signal handler may ask while the main thread holds the lock."""
        deadline = self._deadline
        return not self._stopped and deadline is not None and time.monotonic() >= deadline

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                assert self._deadline is not None
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopped:
                return
        self._on_expire()
