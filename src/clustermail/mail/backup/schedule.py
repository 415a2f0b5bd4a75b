"""Backup schedules of the mail_store resource, as pure functions of the time.

    backup_schedule = "daily 02:00"        a full backup every day at 02:00 UTC
    backup_schedule = "every 6h"           a full backup every 6 hours (00:00, 06:00… UTC)
    backup_incremental_schedule = "every 1h"

A schedule is a sequence of *slots* (their start times). The owner takes the latest slot
that has begun when it has not been taken yet (it records taken slots in the store with a
compare-and-swap), so a virtual server that was down at 02:00 backs up once when it comes
back, never once per missed slot, and two owners one after the other never both run it.
Times are UTC so that every node of a cluster agrees on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAY = 86400.0
_UNITS = {"m": 60.0, "h": 3600.0, "d": DAY}
_DAILY = re.compile(r"^daily\s+(\d{1,2}):(\d{2})$")
_EVERY = re.compile(r"^every\s+(\d+)\s*([mhd])$")
EXAMPLES = '"daily 02:00" (UTC) or "every 6h" (minutes m, hours h, days d)'


class ScheduleError(ValueError):
    """A schedule that cannot be read; the text says what is expected."""


@dataclass(frozen=True, slots=True)
class Schedule:
    #: Slots are ``offset + k * period`` seconds since the Unix epoch.
    period: float
    offset: float
    text: str

    def latest(self, now: float) -> float:
        """The start of the latest slot at or before ``now``."""
        return self.offset + ((now - self.offset) // self.period) * self.period

    def next(self, now: float) -> float:
        """The start of the first slot after ``now``."""
        return self.latest(now) + self.period


def parse_schedule(text: str) -> Schedule:
    value = " ".join(text.strip().lower().split())
    if m := _DAILY.match(value):
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour > 23 or minute > 59:
            raise ScheduleError(f"backup schedule {text!r}: no such time of day; use "
                                + EXAMPLES)
        return Schedule(DAY, hour * 3600.0 + minute * 60.0, text)
    if m := _EVERY.match(value):
        period = int(m.group(1)) * _UNITS[m.group(2)]
        if period < 60:
            raise ScheduleError(f"backup schedule {text!r}: at least every 1m")
        return Schedule(period, 0.0, text)
    raise ScheduleError(f"backup schedule {text!r}: expected {EXAMPLES}")


def due(schedule: Schedule, last_taken: float | None, now: float) -> float | None:
    """The slot to take now, or None. Without any slot taken yet (the schedule is new),
    nothing is due: the first backup is at the next slot, not at once on every node
    start."""
    slot = schedule.latest(now)
    if last_taken is None or slot <= last_taken:
        return None
    return slot


__all__ = ["EXAMPLES", "Schedule", "ScheduleError", "due", "parse_schedule"]
