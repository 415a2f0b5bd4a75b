"""The one-owner audit: which resource host had which virtual server's disk mounted, when.

Each ``disk`` resource appends a line to ``<disk>/.clustermail/audit.log`` when it
mounts (with the owner's fencing epoch, its PID and CLOCK_MONOTONIC) and when it
unmounts. A host that is killed writes nothing more, so the watcher opens a
pidfd for every host it sees mount and takes the moment the pidfd reports the
exit as the end of that host's tenure. Two tenures of one disk that overlap in
time are two resource hosts serving one virtual server at once.

The watcher errs on the safe side: an end it learns late (a host that died
before its pidfd could be opened ends when that was noticed, unless its own
unmount line says when) can only make a tenure longer, never hide an overlap.

A host the campaign froze with SIGSTOP cannot serve, write or answer while
frozen: an overlap counts only the time the older host could run (see
:meth:`AuditWatcher.froze`). The freeze is taken as starting once the kernel
shows the process stopped and as ending just before SIGCONT — or never, when
the host died frozen.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POLL = 0.02


@dataclass
class Tenure:
    vs: str
    epoch: int
    pid: int
    start: float
    end: float | None = None
    how: str = ""  # "unmount", "exit" or "gone before seen"


@dataclass(frozen=True)
class Overlap:
    vs: str
    first: Tenure
    second: Tenure
    #: Of the overlap, the time the older host was running (not frozen).
    seconds: float
    frozen: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"vs": self.vs, "seconds": round(self.seconds, 4),
                "frozen_s": round(self.frozen, 4),
                "first": {"epoch": self.first.epoch, "pid": self.first.pid,
                          "start": self.first.start, "end": self.first.end,
                          "how": self.first.how},
                "second": {"epoch": self.second.epoch, "pid": self.second.pid,
                           "start": self.second.start}}


@dataclass
class _Trail:
    vs: str
    path: Path
    offset: int = 0
    pending: bytes = b""


@dataclass
class AuditWatcher:
    """Follows the audit trails of ``disks`` (virtual server -> disk folder)."""

    disks: dict[str, Path]
    tenures: dict[str, list[Tenure]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Mounts whose epoch was not above the one before: fencing did not hold.
    epoch_regressions: set[str] = field(default_factory=set)
    #: pid -> intervals (CLOCK_MONOTONIC) it was frozen; an open end: died frozen.
    frozen: dict[int, list[tuple[float, float | None]]] = field(default_factory=dict)
    _pidfds: dict[int, Tenure] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for fd in list(self._pidfds):
            os.close(fd)
        self._pidfds.clear()

    def _run(self) -> None:
        trails = [_Trail(vs, path / ".clustermail" / "audit.log") for vs, path in
                  self.disks.items()]
        poller = select.poll()
        while not self._stop.is_set():
            for trail in trails:
                self._read(trail, poller)
            for fd, _ in poller.poll(POLL * 1000):
                now = time.monotonic()
                poller.unregister(fd)
                tenure = self._pidfds.pop(fd)
                os.close(fd)
                with self._lock:
                    if tenure.end is None:
                        tenure.end, tenure.how = now, "exit"

    def _read(self, trail: _Trail, poller: select.poll) -> None:
        try:
            with open(trail.path, "rb") as f:
                f.seek(trail.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        trail.offset += len(chunk)
        *lines, trail.pending = (trail.pending + chunk).split(b"\n")
        for line in lines:
            try:
                entry = json.loads(line)
                event, epoch, pid, mono = (entry["event"], int(entry["epoch"]),
                                           int(entry["pid"]), float(entry["mono"]))
            except (ValueError, KeyError, TypeError):
                self.problems.append(f"{trail.path}: unreadable line {line[:80]!r}")
                continue
            with self._lock:
                if event == "mount":
                    self._mounted(trail.vs, epoch, pid, mono, poller)
                elif event == "unmount":
                    self._unmounted(trail.vs, epoch, pid, mono)

    def _mounted(self, vs: str, epoch: int, pid: int, mono: float, poller: select.poll) -> None:
        tenure = Tenure(vs, epoch, pid, mono)
        self.tenures.setdefault(vs, []).append(tenure)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            tenure.end, tenure.how = time.monotonic(), "gone before seen"
            return
        self._pidfds[fd] = tenure
        poller.register(fd, select.POLLIN)

    def _unmounted(self, vs: str, epoch: int, pid: int, mono: float) -> None:
        for tenure in reversed(self.tenures.get(vs, [])):
            if tenure.pid != pid or tenure.epoch != epoch:
                continue
            # The host's own line beats the moment we noticed it gone.
            if tenure.end is None or (tenure.how == "gone before seen" and mono < tenure.end):
                tenure.end, tenure.how = mono, "unmount"
            return

    def froze(self, pid: int, at: float) -> None:
        """``pid`` is stopped (SIGSTOP delivered) since ``at``."""
        with self._lock:
            self.frozen.setdefault(pid, []).append((at, None))

    def thawed(self, pid: int, at: float) -> None:
        """``pid`` may run again from ``at`` (call it just before SIGCONT, and only if
        the process is still alive: one that died frozen never ran again)."""
        with self._lock:
            spans = self.frozen.get(pid)
            if spans and spans[-1][1] is None:
                spans[-1] = (spans[-1][0], at)

    def _running(self, pid: int, start: float, end: float) -> tuple[float, float]:
        """Of [start, end], the seconds ``pid`` could run and the seconds it was frozen."""
        frozen = 0.0
        for a, b in self.frozen.get(pid, []):
            lo, hi = max(a, start), min(end, b if b is not None else end)
            frozen += max(0.0, hi - lo)
        frozen = min(frozen, end - start)
        return end - start - frozen, frozen

    def overlaps(self) -> list[Overlap]:
        """Every pair of tenures of one disk that overlap (each open tenure counts as
        lasting until now), and mounts whose epoch did not grow."""
        found = []
        with self._lock:
            for vs, tenures in self.tenures.items():
                ordered = sorted(tenures, key=lambda t: t.start)
                for i, first in enumerate(ordered):
                    for second in ordered[i + 1:]:
                        end = first.end if first.end is not None else time.monotonic()
                        if second.start < end:
                            running, frozen = self._running(first.pid, second.start, end)
                            if running > 0:
                                found.append(Overlap(vs, first, second, running, frozen))
                for a, b in itertools.pairwise(ordered):
                    if b.epoch <= a.epoch:
                        self.epoch_regressions.add(
                            f"{vs}: epoch {b.epoch} (pid {b.pid}) mounted after {a.epoch}")
        return found

    def count(self) -> int:
        with self._lock:
            return sum(len(t) for t in self.tenures.values())
