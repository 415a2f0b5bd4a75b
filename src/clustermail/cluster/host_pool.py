"""The node agent's resource host processes: starting them, one warm spare, their pipes.

A resource host (:mod:`clustermail.cluster.host_main`) is a child process per
virtual server the node owns. The agent writes the spec and commands to its
stdin and reads typed events from its stdout
(:mod:`clustermail.cluster.host_protocol`); it can always SIGKILL it. Each host
carries a :class:`~clustermail.cluster.supervision.HostWatch`, fed with the
times of its answers to the agent's pings as they are read.

Starting Python and importing the resource types is most of a host's start-up,
so the pool keeps one host started ahead of need, waiting for a spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from clustermail.cluster import procutil
from clustermail.cluster.host_protocol import (
    Command,
    HostEvent,
    PingCommand,
    PongEvent,
    ProtocolError,
    VirtualServerSpec,
    decode_event,
    encode_command,
    encode_spec,
)
from clustermail.cluster.supervision import HostWatch
from clustermail.logutil import log_event
from clustermail.private_files import append_private, make_private_dir

#: Seconds after joining, or after using its spare, before a node starts a spare host.
SPARE_DELAY = 2.0
#: The module a resource host process runs.
HOST_MODULE = "clustermail.cluster.host_main"


class HostProcess:
    """One resource host child process: commands to its stdin, events from its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, node: str) -> None:
        self._proc = proc
        self.node = node
        self.vs: str | None = None  # known once it has its spec
        self.watch: HostWatch | None = None  # from then on too

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def start(self, spec: VirtualServerSpec, host_timeout: float) -> None:
        """Hands the host its virtual server (the first line it reads); from now on it
        must answer pings within ``host_timeout``."""
        self.vs = spec.vs
        self.watch = HostWatch(host_timeout, since=time.monotonic())
        # A ping in the same write: read with the spec, answered before any resource
        # runs, so host_timeout alone applies from then on, even to the first online.
        self._write(encode_spec(spec) + encode_command(PingCommand(0)))

    def send(self, command: Command) -> None:
        self._write(encode_command(command))

    def _write(self, line: str) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            return
        # A host that died meanwhile is noticed by its reader, not here.
        with contextlib.suppress(ConnectionError, RuntimeError):
            stdin.write(line.encode())

    def kill(self) -> None:
        """SIGKILL, now (it reverts nothing: the agent does that for it)."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)

    async def kill_hung(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; SIGKILL at once to a stopped
        host, which could not act on SIGTERM anyway (or with no grace). Returns once
        it is reaped."""
        if grace > 0 and self._proc.returncode is None and not procutil.is_stopped(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._proc.wait()
        self.kill()
        await self._proc.wait()

    async def wait(self) -> int:
        return await self._proc.wait()

    async def follow(self, on_event: Callable[[HostEvent], Awaitable[None]]) -> int:
        """Hands every event to ``on_event`` until the host closes its stdout;
        returns its exit code once it has exited. A line that is not a valid
        event is logged and skipped.

        Lines are read as they come, whatever ``on_event`` is waiting for (a slow
        store write), so an answer to a ping is timed when it arrives; pongs feed
        the host's watch and go no further."""
        stdout = self._proc.stdout
        assert stdout is not None
        events: asyncio.Queue[HostEvent | None] = asyncio.Queue()

        async def read() -> None:
            try:
                while line := await stdout.readline():
                    try:
                        event = decode_event(line)
                    except ProtocolError as exc:
                        log_event("host_bad_event", node=self.node, vs=self.vs,
                                  message=f"resource host {self.pid} wrote a bad event: {exc}")
                        continue
                    if isinstance(event, PongEvent):
                        if self.watch is not None:
                            self.watch.answered(time.monotonic())
                        continue
                    events.put_nowait(event)
            finally:
                events.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (event := await events.get()) is not None:
                await on_event(event)
        finally:
            reader.cancel()
            code = await self._proc.wait()
        return code


async def start_host(data_dir: Path, node: str, store_scheme: str = "") -> HostProcess:
    """A new resource host, importing every resource type (and the backend of the
    store, if ``store_scheme`` names one) while it waits for its spec."""
    logs = make_private_dir(data_dir / "logs")
    # One log per node: a spare host does not know yet which virtual server it
    # will run; its JSON lines name the virtual server once it does.
    with os.fdopen(append_private(logs / f"{node}-resource-hosts.log"), "ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            HOST_MODULE,
            "--parent-pid",
            str(os.getpid()),
            "--preload-types",
            *(["--preload-store", store_scheme] if store_scheme else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    return HostProcess(proc, node)


class HostPool:
    """Hands out resource host processes, keeping one spare started ahead of need
    while ``keep_spare()`` says so (not while the node is stopping)."""

    def __init__(self, data_dir: Path, node: str, keep_spare: Callable[[], bool],
                 store_scheme: str = "") -> None:
        self.data_dir = data_dir
        self.node = node
        self.store_scheme = store_scheme
        self._keep_spare = keep_spare
        self._spare: HostProcess | None = None
        self._refill_task: asyncio.Task[None] | None = None

    def refill(self) -> None:
        """Starts a spare in the background, after :data:`SPARE_DELAY`."""
        self._refill_task = asyncio.get_running_loop().create_task(self._refill())

    async def take(self) -> HostProcess:
        """The spare if it is alive, else a new host; a new spare follows later."""
        spare, self._spare = self._spare, None
        if spare is None or spare.returncode is not None:
            spare = await start_host(self.data_dir, self.node, self.store_scheme)
        self.refill()
        return spare

    async def _refill(self) -> None:
        # Later, not now: starting Python costs CPU that the virtual servers
        # coming online (and this node's lease renewals) need more.
        await asyncio.sleep(SPARE_DELAY)
        if self._spare is None and self._keep_spare():
            with contextlib.suppress(OSError):
                self._spare = await start_host(self.data_dir, self.node, self.store_scheme)

    def close(self) -> None:
        """Stops refilling and kills the spare."""
        if self._refill_task is not None:
            self._refill_task.cancel()
        if self._spare is not None:
            self._spare.kill()
