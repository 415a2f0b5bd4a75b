"""Facts about the machine a benchmark runs on, recorded beside its numbers."""

from __future__ import annotations

import os


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages: recorded before and after each cell,
    since the machine may be shared and load moves every number."""
    return [round(x, 2) for x in os.getloadavg()]
