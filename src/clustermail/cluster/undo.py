"""Undo records: what a resource leaves on the machine that outlives its process.

An ``ip_address`` in interface mode adds an address to a network interface, and
the kernel keeps it when the resource host dies without taking it offline: killed
with its agent (parent-death SIGKILL), fenced by its watchdog, crashed. Another
node then brings the same address up and the LAN has it twice. So before such a
resource changes the machine it writes the command that reverts the change to
``<data>/undo/<node>/<vs>/<resource>.json`` (by node: the local cluster's nodes
share one data directory), and a clean offline deletes the record.
Whoever finds a record of a host that is gone runs it:

* the resource host itself when it fences (synchronously, after killing its
  children, before it exits);
* the node agent when a resource host exits or is killed, and for every record
  at startup (what a previous run of the agent left).

A record whose command fails stays, to be tried again at the next of those.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clustermail.private_files import make_private_dir, open_private

UNDO_DIR = "undo"
TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Undone:
    vs: str
    resource: str
    what: str
    error: str | None  # None: reverted (or nothing was left to revert)


def _path(data_dir: Path, node: str, vs: str, resource: str) -> Path:
    return data_dir / UNDO_DIR / node / vs / f"{resource}.json"


def record(
    data_dir: Path, node: str, vs: str, resource: str, argv: list[str], what: str,
    already_done: tuple[str, ...] = (),
) -> None:
    """Writes (durably) how to revert a change, before making it. ``already_done``:
    output fragments that mean there was nothing left to revert."""
    path = _path(data_dir, node, vs, resource)
    make_private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
        json.dump({"argv": argv, "what": what, "already_done": list(already_done)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def clear(data_dir: Path, node: str, vs: str, resource: str) -> None:
    """The change was reverted cleanly: forget it."""
    _path(data_dir, node, vs, resource).unlink(missing_ok=True)


def run_pending(
    data_dir: Path, node: str, vs: str | None = None, timeout: float = TIMEOUT
) -> list[Undone]:
    """Runs the node's records of ``vs`` (of every virtual server when None), now."""
    root = data_dir / UNDO_DIR / node
    dirs = [root / vs] if vs is not None else sorted(p for p in root.glob("*") if p.is_dir())
    done: list[Undone] = []
    for folder in dirs:
        for path in sorted(folder.glob("*.json")):
            result = _run(folder.name, path, timeout)
            if result is not None:
                done.append(result)
    return done


def _unsafe(st: os.stat_result) -> str | None:
    """Why a record's file cannot be trusted, or None."""
    if st.st_uid not in (os.geteuid(), 0):
        return f"owned by uid {st.st_uid}, not by us (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {st.st_mode & 0o7777:04o})"
    return None


def _run(vs: str, path: Path, timeout: float) -> Undone | None:
    resource = path.stem
    try:
        with open(path, "rb") as f:
            unsafe = _unsafe(os.fstat(f.fileno()))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None  # another runner (the agent, the host) has just done it
    except OSError as exc:
        return Undone(vs, resource, "?", f"cannot read undo record {path}: {exc}")
    if unsafe:
        # A command others could have written is never run (and kept, for a look).
        return Undone(vs, resource, "?", f"refusing to run undo record {path}: {unsafe}")
    try:
        entry = json.loads(text)
        argv = [str(a) for a in entry["argv"]]
        what = str(entry.get("what", " ".join(argv)))
        already = tuple(str(s) for s in entry.get("already_done", ()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        path.unlink(missing_ok=True)  # unreadable: it can never be run
        return Undone(vs, resource, "?", f"unreadable undo record {path}: {exc}")
    try:
        run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Undone(vs, resource, what, str(exc))
    output = (run.stdout + run.stderr).strip()
    if run.returncode != 0 and not any(s in output for s in already):
        return Undone(vs, resource, what, output or f"exit code {run.returncode}")
    path.unlink(missing_ok=True)
    return Undone(vs, resource, what, None)
