"""The ``process`` resource: a service run as a supervised child process.

The child runs in its own process group (so stopping it reaches its helpers)
with a parent-death signal (so it dies with the resource host, even when the
host is SIGKILLed). Its stdout and stderr go to ``<data_dir>/logs/<vs>-<resource>.log``.

Properties:

* ``command`` (required) — argv list, or a string run by ``/bin/sh -c``.
* ``tcp_check`` — ``"host:port"``: online waits until it accepts a connection;
  quick and thorough checks connect to it. Something already listening there
  before the service starts (a stray process) fails the online at once, naming
  the holder: its connections would pass for the service's.
* ``health_command`` — argv list or shell string; the thorough check passes
  when it exits 0 within ``health_timeout`` (default 10 s).
* ``stop_timeout`` — seconds between SIGTERM and SIGKILL (default 10).
* ``start_grace`` — without ``tcp_check``, how long the process must stay up
  to count as online (default 0.5 s).
* ``env`` — extra environment variables, ``["NAME=value", …]``; ``cwd`` — working
  directory.

The environment also carries CLUSTERMAIL_VS, CLUSTERMAIL_NODE and CLUSTERMAIL_EPOCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import IO

from clustermail.cluster import ports, procutil
from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import (
    PropertyKind,
    PropertySpec,
    ResourceType,
    non_empty,
)
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.private_files import append_private, make_private_dir

CONNECT_TIMEOUT = 2.0
READY_POLL = 0.05
TERMINATE_WAIT = 5.0


def parse_endpoint(text: str, owner: str) -> tuple[str, int]:
    """``"127.0.0.11:25"`` or ``"[::1]:25"`` → (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PropertyError(f"{owner}: property 'tcp_check': expected host:port, got {text!r}")
    return host, int(port)


def _argv(props: Properties, key: str, owner: str) -> list[str] | None:
    value = props.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return ["/bin/sh", "-c", value]
    argv = props.string_list(key)
    if not argv:
        raise PropertyError(f"{owner}: property {key!r} is empty")
    return argv


async def tcp_connects(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ProcessResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        argv = _argv(properties, "command", ctx.resource)
        if argv is None:
            raise PropertyError(f"{ctx.resource}: property 'command' is required")
        self.argv = argv
        self.health_argv = _argv(properties, "health_command", ctx.resource)
        tcp = properties.optional_string("tcp_check")
        self.tcp_check = parse_endpoint(tcp, ctx.resource) if tcp else None
        self.health_timeout = properties.number("health_timeout", 10.0)
        self.stop_timeout = properties.number("stop_timeout", 10.0)
        self.start_grace = properties.number("start_grace", 0.5)
        env = properties.string_list("env", [])
        if any("=" not in item[1:] for item in env):
            raise PropertyError(f"{ctx.resource}: property 'env': expected NAME=value items")
        self.extra_env = dict(item.split("=", 1) for item in env)
        self.cwd = properties.optional_string("cwd")
        self.log_path = ctx.data_dir / "logs" / f"{ctx.vs}-{ctx.resource}.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.ctx.env(), **self.extra_env}

    async def _spawn(self, argv: list[str], out: IO[bytes] | int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env(),
            cwd=self.cwd,
            start_new_session=True,  # a process group of its own: stopped as a group
            preexec_fn=procutil.child_preexec(),
        )
        procutil.live_groups.add(proc.pid)
        return proc

    async def online(self) -> None:
        name = self.ctx.resource
        if self.tcp_check is not None:
            await self._check_port_free(*self.tcp_check)
        try:
            make_private_dir(self.log_path.parent)
            # Lives as long as the child.
            self._log = os.fdopen(append_private(self.log_path), "ab")
        except OSError as exc:
            raise ResourceError(f"{name}: cannot open the log {self.log_path}: {exc}") from exc
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._log.write(f"--- {stamp} starting {self.argv} (epoch {self.ctx.epoch})\n".encode())
        self._log.flush()
        try:
            self._proc = proc = await self._spawn(self.argv, self._log)
        except OSError as exc:
            raise ResourceError(
                f"{name}: cannot start {self.argv[0]}: {exc.strerror or exc}", permanent=True
            ) from exc
        if self.tcp_check is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.start_grace):
                    await asyncio.shield(proc.wait())
            if proc.returncode is not None:
                raise ResourceError(self._exited(proc.returncode, "within its start grace"))
            return
        host, port = self.tcp_check
        while not await tcp_connects(host, port):
            if proc.returncode is not None:
                raise ResourceError(
                    self._exited(proc.returncode, f"before accepting connections on {host}:{port}")
                )
            await asyncio.sleep(READY_POLL)

    async def _check_port_free(self, host: str, port: int) -> None:
        held = await asyncio.to_thread(ports.listening_inodes, host, port)
        if held:
            note = await asyncio.to_thread(ports.holder_note, host, port)
            raise ResourceError(
                f"{self.ctx.resource}: cannot start {self.argv[0]}: {host}:{port} is already "
                f"in use{note}"
            )

    def _exited(self, code: int, when: str) -> str:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        tail = _tail(self.log_path)
        return f"{self.ctx.resource}: {self.argv[0]} {how} {when}" + (
            f"; last output: {tail}" if tail else ""
        )

    async def offline(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            procutil.kill_group(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await asyncio.shield(proc.wait())
            except TimeoutError:
                self.ctx.log.warning(
                    f"pid {proc.pid} still running {self.stop_timeout:g} s after SIGTERM: SIGKILL"
                )
        await self.terminate()

    async def terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            # The whole group: helpers the service forked go too.
            procutil.kill_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TERMINATE_WAIT):
                    await proc.wait()
            procutil.live_groups.discard(proc.pid)
        log, self._log = self._log, None
        if log is not None:
            log.close()

    async def quick_check(self) -> bool:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return False
        return self.tcp_check is None or await tcp_connects(*self.tcp_check)

    async def thorough_check(self) -> bool:
        if not await self.quick_check():
            return False
        if self.health_argv is None:
            return True
        return await self._health()

    async def _health(self) -> bool:
        assert self.health_argv is not None
        try:
            proc = await self._spawn(self.health_argv, asyncio.subprocess.DEVNULL)
        except OSError as exc:
            self.ctx.log.error(f"cannot run the health command: {exc}")
            return False
        try:
            async with asyncio.timeout(self.health_timeout):
                code = await proc.wait()
        except TimeoutError:
            self.ctx.log.error(f"health command gave no answer within {self.health_timeout:g} s")
            code = -1
        finally:
            procutil.kill_group(proc.pid, signal.SIGKILL)
            procutil.live_groups.discard(proc.pid)
            if proc.returncode is None:
                await proc.wait()
        if code != 0:
            self.ctx.log.warning(f"health command exited with {code}")
        return code == 0


def _tail(path: Path, lines: int = 5) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("--- ")]
    return " | ".join(kept[-lines:])


# --------------------------------------------------------------------------- the type


def _host_port(value: PropertyValue) -> str | None:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return '"host:port" with a port from 1 to 65535, such as "127.0.0.11:2525"'
    return None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _env_list(value: PropertyValue) -> str | None:
    items = value if isinstance(value, tuple) else ()
    if all(_ENV_NAME.match(item) for item in items):
        return None
    return 'a list of "NAME=value" strings, such as ["LANG=C.UTF-8"]'


PROCESS_TYPE = ResourceType(
    "process",
    ProcessResource,
    {
        "command": PropertySpec(PropertyKind.COMMAND, required=True, check=non_empty),
        "health_command": PropertySpec(PropertyKind.COMMAND, check=non_empty),
        "tcp_check": PropertySpec(PropertyKind.STR, check=_host_port),
        "env": PropertySpec(PropertyKind.STR_LIST, check=_env_list),
        "health_timeout": PropertySpec(PropertyKind.FLOAT),
        "stop_timeout": PropertySpec(PropertyKind.FLOAT),
        "start_grace": PropertySpec(PropertyKind.FLOAT),
        "cwd": PropertySpec(PropertyKind.STR),
    },
)
