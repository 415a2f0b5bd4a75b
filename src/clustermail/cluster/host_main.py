"""The resource host process: ``python -m clustermail.cluster.host_main [--parent-pid PID]``.

The node agent starts one per virtual server it owns (:mod:`clustermail.cluster.host_pool`).
This module is the process around the group state machine
(:class:`~clustermail.cluster.resource_host.ResourceHost`): it reads the spec
and the commands from stdin in a thread that also relays the agent's lease
deadlines to the watchdog, asks the kernel for a signal when the agent dies,
ignores the terminal's SIGINT and SIGHUP (its agent decides when it stops), and
exits with the host's exit code (:mod:`clustermail.cluster.host_protocol`)
through ``os._exit``, so nothing left behind in its loop or threads can keep a
stopped host alive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from clustermail import eventloop
from clustermail.cluster import procutil, resource_types
from clustermail.cluster.host_output import EventSink, HostLog
from clustermail.cluster.host_protocol import (
    EXIT_AGENT_GONE,
    EXIT_FENCED,
    MetricsEvent,
    OfflineCommand,
    ProtocolError,
    decode_spec,
)
from clustermail.cluster.resource_host import ResourceHost, reject
from clustermail.cluster.resources.base import StoreHandle
from clustermail.coord.opener import preload_backend
from clustermail.logutil import setup as setup_process_log
from clustermail.private_files import restrict_umask

#: A command line may carry a whole spec.
LINE_LIMIT = 16 * 1024 * 1024


class _LeaseRelay:
    """Deadlines seen by the stdin thread, handed to the watchdog once there is one.

    A host that starts slowly finds the spec and many deadlines waiting in the
    pipe; the newest must arm the watchdog, not the first (by then long past)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latest: float | None = None
        self._target: Callable[[float], None] | None = None

    def seen(self, deadline: float) -> None:
        with self._lock:
            self.latest = deadline if self.latest is None else max(self.latest, deadline)
            target = self._target
        if target is not None:
            target(deadline)

    def attach(self, target: Callable[[float], None]) -> None:
        with self._lock:
            self._target = target
            latest = self.latest
        if latest is not None:
            target(latest)


def _stdin_reader(relay: _LeaseRelay) -> asyncio.StreamReader:
    """stdin as a stream, fed by a thread: works for a pipe, a file, /dev/null
    or a terminal alike (the loop's epoll refuses some of those).

    The thread also hands every lease deadline to the lease relay itself: the
    deadline proves the *agent* is alive, and a host whose own loop is busy
    (mounting a large database, making a certificate) must not fence itself
    for that."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)

    def lease_lines(buffer: bytes) -> bytes:
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            if b'"lease"' in line:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    msg = json.loads(line)
                    if msg.get("cmd") == "lease":
                        relay.seen(float(msg["safe_until"]))
        return rest[-LINE_LIMIT:]

    def pump() -> None:
        pending = b""
        try:
            while chunk := os.read(0, 65536):
                pending = lease_lines(pending + chunk)
                loop.call_soon_threadsafe(reader.feed_data, chunk)
        except OSError:
            pass  # an unreadable stdin is as good as closed
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(reader.feed_eof)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return reader


#: Sent by the kernel when the agent dies (PR_SET_PDEATHSIG). Not SIGKILL: the host
#: must revert what its resources left on the machine before it goes.
PARENT_DEATH_SIGNAL = signal.SIGUSR1

#: The host to clean up after when the agent dies (set once the spec built it).
_current_host: ResourceHost | None = None


def _parent_died(signum: int, frame: object) -> None:
    """The agent died: SIGKILL every child, remove what the resources left on the
    machine (an interface address the next owner will bring up), exit. A plain signal
    handler, run by the main thread at the next bytecode, so it needs the event loop
    for nothing; the lease-deadline watchdog thread backs it up should it never run."""
    procutil.kill_all_groups()
    if _current_host is not None:
        _current_host.revert_changes()
    os._exit(EXIT_AGENT_GONE)


def _continued(signum: int, frame: object) -> None:
    """SIGCONT: the host was frozen. If its lease deadline passed meanwhile, another
    node may own the virtual server now: fence before this process does anything
    else (the watchdog thread would too, but it races the main thread, and the
    relay may hand it a newer deadline read from the pipe after the fact)."""
    host = _current_host
    if host is not None and host.watchdog.expired():
        procutil.kill_all_groups()
        host.revert_changes()
        os._exit(EXIT_FENCED)


async def amain() -> int:
    loop = asyncio.get_running_loop()
    early = HostLog("?", "?", None)
    host: ResourceHost | None = None

    def gone(why: str) -> None:
        if host is not None:
            host.agent_gone(why)

    sink = EventSink(sys.stdout, gone)
    relay = _LeaseRelay()
    reader = _stdin_reader(relay)
    try:
        first = await reader.readline()
    except ValueError as exc:
        return reject(sink, early, f"spec rejected: {exc}")
    if not first:
        early.write("error", "stdin closed before the spec arrived", None)
        return EXIT_AGENT_GONE
    try:
        spec = decode_spec(first)
    except ProtocolError as exc:
        return reject(sink, early, f"spec rejected: {exc}")
    log = HostLog(spec.vs, spec.node, sink)
    host = ResourceHost(spec, sink, log)
    global _current_host
    _current_host = host
    relay.attach(host.watchdog.set_deadline)
    # Connect to the store while the first resources come online: a network
    # name or a mail store needs it soon, and connecting costs a round trip.
    warm = loop.create_task(_warm_store(host.store))
    # SIGTERM from the agent: the same as an "offline" command.
    loop.add_signal_handler(signal.SIGTERM, host.dispatch, OfflineCommand())
    metrics = loop.create_task(_push_metrics(sink))
    code = await host.run(reader)
    warm.cancel()
    metrics.cancel()
    # Exit now, not through asyncio.run's clean-up: it would wait for every task
    # and worker thread, and a resource's operation that ignored its cancellation
    # or a call blocked in a thread must not keep a stopped host alive. The
    # children are dead already and the store is closed.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


#: How often the host sends its counters to the agent (a scrape sees them this late).
METRICS_INTERVAL = 5.0


async def _push_metrics(sink: EventSink) -> None:
    """Sends this process's registry to the agent now and then (see host_protocol)."""
    from clustermail.metrics import exposition

    await asyncio.sleep(1.0)
    last = ""
    while not sink.gone:
        text = exposition()
        if text != last:  # nothing new (or no metrics at all): nothing to send
            sink.emit(MetricsEvent(text, time.time()))
            last = text
        await asyncio.sleep(METRICS_INTERVAL)


async def _warm_store(handle: StoreHandle) -> None:
    with contextlib.suppress(Exception):
        await (await handle.get()).revision()


def _ignore(signum: int, frame: object) -> None:
    """SIGINT and SIGHUP: a Ctrl-C or a closed terminal reaches the agent's whole process
    group; the agent decides when its hosts stop. A handler rather than SIG_IGN, so the
    services the host starts get the default action back when they exec."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The resource host of one virtual server.")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="the agent's pid: exit at once if it is already gone when we start",
    )
    parser.add_argument(
        "--preload-types",
        action="store_true",
        help="import every registered resource type before waiting for the spec "
        "(a warm spare host starts faster)",
    )
    parser.add_argument(
        "--preload-store",
        metavar="SCHEME",
        help="import the coordination store backend of this URL scheme (sqlite, etcd, "
        "etcds) before waiting for the spec: the first resources need the store",
    )
    args = parser.parse_args(argv)
    restrict_umask()  # inherited from the agent already; explicit for any other caller
    setup_process_log()
    signal.signal(PARENT_DEATH_SIGNAL, _parent_died)  # before it can be sent
    signal.signal(signal.SIGCONT, _continued)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    procutil.set_parent_death_signal(PARENT_DEATH_SIGNAL, args.parent_pid)
    if args.preload_types:
        # A type that cannot load is reported when a spec uses it, not here.
        resource_types.load_all()
    if args.preload_store:
        preload_backend(args.preload_store)
    return eventloop.run(amain())


if __name__ == "__main__":
    sys.exit(main())
