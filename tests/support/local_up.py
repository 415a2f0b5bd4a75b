"""Running `clustermail up` as a user does, for end-to-end tests: a real process,
its output read line by line, its processes found in /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from clustermail.cluster.proctree import ProcRef, descendants, parent_of

ROOT = Path(__file__).resolve().parents[2]

#: Resets SIGINT and SIGHUP to their defaults before exec: a shell without job control
#: starts background commands (and so pytest, and so `up`) with SIGINT ignored, `nohup`
#: ignores SIGHUP, and an ignored signal stays ignored in `up` and the CLI — as it
#: should for a background job. Run as ``python -c WITH_DEFAULT_SIGNALS -m ...``.
WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.signal(signal.SIGHUP, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def start_up(data: Path, *extra: str, new_session: bool = False,
             preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    """`clustermail up --data DATA` with its output (stdout and stderr) on a pipe."""
    return subprocess.Popen(
        [sys.executable, "-c", WITH_DEFAULT_SIGNALS, "-m", "clustermail", "up",
         "--data", str(data), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"}, start_new_session=new_session,
        preexec_fn=preexec_fn,
    )


def read_until(proc: subprocess.Popen[str], text: str, timeout: float = 90) -> str:
    """The output up to and including the line that contains ``text``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} not seen; output:\n{''.join(seen)}")


def cli(data: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clustermail", *args, "--data", str(data)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def status_pids(data: Path) -> list[int]:
    """Node agents, resource hosts and resource processes of `status --json`."""
    status = json.loads(cli(data, "status", "--json").stdout)
    pids = [n["pid"] for n in status["nodes"]]
    pids += [v["pid"] for v in status["virtual_servers"]]
    pids += [p for v in status["virtual_servers"] for p in v["resource_pids"].values()]
    assert all(isinstance(p, int) and alive(p) for p in pids), status
    return pids


def cluster_processes(up: subprocess.Popen[str], data: Path) -> list[ProcRef]:
    """Everything `up` runs: the processes below it (spare hosts too) and those the
    status names (a resource process that left its parent is still its virtual
    server's)."""
    pids = set(descendants(up.pid)) | set(status_pids(data))
    return [r for p in sorted(pids) if (r := ProcRef.of(p)) is not None]


def wait_all_gone(refs: list[ProcRef], timeout: float) -> list[ProcRef]:
    deadline = time.monotonic() + timeout
    left = [r for r in refs if r.alive()]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [r for r in left if r.alive()]
    return left


def kill_all(refs: list[ProcRef]) -> None:
    """Cleanup after a failed test: nothing it started may outlive it."""
    for ref in refs:
        ref.kill(signal.SIGKILL)


def node_agents_on(data: Path) -> list[int]:
    """PIDs of `node run` processes whose command line names ``data``. A child an agent
    is starting (forked, not yet exec'd) still shows the agent's command line: it is
    left out by its parent, which is one of them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"node" in argv and b"run" in argv and str(data).encode() in argv:
            found.append(int(entry.name))
    return [pid for pid in found if parent_of(pid) not in found]


def stop_up(up: subprocess.Popen[str], procs: list[ProcRef], sig: int, *,
            group: bool = False, timeout: float = 90, gone_within: float = 10) -> str:
    """Sends ``sig`` to `up` (or its process group); returns the rest of its output
    once it exited 0 and every process in ``procs`` is gone (killed, by PID, if not)."""
    try:
        if group:
            os.killpg(up.pid, sig)
        else:
            up.send_signal(sig)
        try:
            rest, _ = up.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (
                exc.output or "")
            raise AssertionError(f"`up` still running {timeout:g} s after "
                                 f"{signal.Signals(sig).name}; its last output:\n"
                                 f"{out[-3000:]}") from None
        left = wait_all_gone(procs, gone_within)
        assert not left, f"still running after {signal.Signals(sig).name}: {left}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        kill_all(procs)
    assert up.returncode == 0, rest
    return rest
