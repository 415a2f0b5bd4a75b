"""Structured logs: one JSON object per event on stderr, for every layer."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def log_event(event: str, *, message: str, **fields: Any) -> None:
    record = {"time": round(time.time(), 3), "event": event, "message": message}
    record.update({k: v for k, v in fields.items() if v not in (None, "")})
    try:
        sys.stderr.write(json.dumps(record, default=str) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # a closed stderr must never take a node agent down
