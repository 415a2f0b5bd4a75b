"""One member of `up --etcd`'s private etcd cluster, kept by a small process.

``python -m clustermail.admin.local_etcd_keeper --stop-with PID --data DIR --log
FILE -- etcd ARGS…`` runs etcd as its child and holds it to the lifecycle rules
of the local cluster's node agents:

* SIGTERM, SIGINT or SIGHUP (`up` stopping the cluster): etcd gets SIGTERM,
  then SIGKILL if it has not exited within :data:`STOP_GRACE` seconds.
* `up` (process PID) gone, even by SIGKILL: the same watch as the node agents'
  (:mod:`clustermail.cluster.owner_watch`) notices at once; the keeper lets the
  node agents of DIR finish their own stop first (they go offline and revoke
  their leases through this store), at most :data:`AGENTS_GRACE` seconds, then
  stops etcd. Past :data:`HARD_LIMIT` seconds the watch SIGKILLs etcd and the
  keeper whatever they are doing.
* The keeper itself killed: etcd gets SIGKILL from the kernel (parent-death
  signal), so no member outlives its keeper.

etcd is a program of its own (Go): it cannot watch `up` itself, hence a keeper.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from clustermail.admin import dir_lock
from clustermail.cluster import owner_watch

#: Seconds etcd gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0
#: Seconds the node agents get to stop on their own once `up` is gone (their own
#: owner watch kills them after 10 s).
AGENTS_GRACE = 15.0
#: Seconds after `up`'s exit when everything of the keeper is SIGKILLed.
HARD_LIMIT = AGENTS_GRACE + STOP_GRACE + 5.0
_PR_SET_PDEATHSIG = 1


def _libc_prctl() -> Callable[..., int]:
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def run(owner: int, data_dir: Path, log_path: Path, argv: list[str]) -> int:
    # Before anything else: with `up` already gone there is nothing to start for.
    try:
        owner_fd = owner_watch.open_owner(owner)
    except owner_watch.OwnerWatchError as exc:
        sys.stderr.write(f"clustermail etcd keeper: {exc}\n")
        return 1
    os.close(owner_fd)
    prctl = _libc_prctl()
    keeper = os.getpid()

    def die_with_keeper() -> None:
        # Runs in the child between fork and exec; the keeper has no other thread yet.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != keeper:  # the keeper died before the line above
            os._exit(1)

    with log_path.open("ab") as log:
        etcd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_keeper)
    stop = threading.Event()
    why: list[str] = []

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        why.append(signal.Signals(sig).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def owner_gone() -> None:
        why.append("owner gone")
        stop.set()

    try:
        owner_watch.stop_with(owner, HARD_LIMIT, on_gone=owner_gone)
    except owner_watch.OwnerWatchError:
        owner_gone()
    while not stop.wait(0.5):
        if etcd.poll() is not None:
            return etcd.returncode
    if why and why[0] == "owner gone":
        # The node agents stop through this store: it stays up until they are gone.
        deadline = time.monotonic() + AGENTS_GRACE
        while dir_lock.node_holders(data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
    etcd.terminate()
    try:
        return etcd.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        etcd.kill()
        return etcd.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clustermail-etcd-keeper")
    parser.add_argument("--stop-with", type=int, required=True, metavar="PID")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("etcd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.etcd[1:] if args.etcd[:1] == ["--"] else args.etcd
    if not command:
        parser.error("the etcd command line is missing (after --)")
    return run(args.stop_with, args.data, args.log, command)


if __name__ == "__main__":
    sys.exit(main())
