"""Shared plumbing of the protocol resources (SMTP, POP3, IMAP4): listening sockets on the
virtual server's address, a plain port (STARTTLS) and an implicit-TLS port (RFC 8314),
TCP_NODELAY, connection limits, idle timeouts and failed-login throttling.

Two ways to serve:

* **stream handlers** (POP3): ``async def handle(conn: Connection)``; the
  :class:`Connection` reads lines with the idle timeout and the protocol's line limit,
  writes, and upgrades to TLS (STLS) with the plaintext buffer discarded; reads go
  through :class:`BufferedStreamProtocol`, which can also offer a lone line to a
  synchronous hook (:meth:`Connection.set_line_hook`);
* **protocol factories** (SMTP on aiosmtpd): ``factory(endpoint) -> asyncio.Protocol``; the
  protocol calls :meth:`Admission.admit` / :meth:`Admission.release` itself.

IMAP4 runs its own asyncio server (its framer reads literals, not lines, and IDLE waits
on the store as well as the client) and takes only the pieces: :class:`Admission`,
:class:`~.auth_throttle.AuthThrottle` (:func:`shared_throttle`; logins go through
:func:`.login_guard.guarded_login`), :class:`ListenerLimits`,
:func:`client_address`, :func:`set_nodelay` and :func:`is_loopback`.

Usage::

    listener = Listener("pop3", address, [Endpoint(110, False), Endpoint(995, True)],
                        tls_context, ListenerLimits(), busy_reply=b"-ERR [SYS/TEMP] busy\\r\\n")
    await listener.start_streams(handle)       # or: await listener.start_protocol(factory)
    ...
    await listener.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from clustermail.cluster.ports import in_use_note
from clustermail.logutil import log_event
from clustermail.mail import metrics
from clustermail.mail.net.auth_throttle import AuthThrottle as AuthThrottle  # re-export
from clustermail.mail.net.tls import HANDSHAKE_TIMEOUT

#: StreamReader buffer limit; protocols enforce their own (smaller) line limits on top.
READ_LIMIT = 64 * 1024
#: Bytes read from the socket at a time by :class:`BufferedStreamProtocol`.
RECV_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    port: int
    implicit_tls: bool  # TLS from the first byte (465/993/995), else plain with STARTTLS


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    max_connections: int = 1000
    max_per_client: int = 50
    idle_timeout: float = 300.0


# --------------------------------------------------------------------------- admission


class Admission:
    """Counts connections in total and per client address; refuses above the limits."""

    def __init__(self, limits: ListenerLimits, protocol: str = "") -> None:
        self.limits = limits
        self.protocol = protocol  # the metrics' label
        self.active = 0
        self._per_client: dict[str, int] = {}

    def admit(self, client: str) -> bool:
        n = self._per_client.get(client, 0)
        if self.active >= self.limits.max_connections or n >= self.limits.max_per_client:
            metrics.REFUSED.labels(self.protocol).inc()
            return False
        self.active += 1
        self._per_client[client] = n + 1
        metrics.SESSIONS.labels(self.protocol).inc()
        metrics.SESSIONS_ACTIVE.labels(self.protocol).inc()
        return True

    def release(self, client: str) -> None:
        n = self._per_client.get(client, 0)
        if n <= 0:
            return
        metrics.SESSIONS_ACTIVE.labels(self.protocol).dec()
        self.active -= 1
        if n == 1:
            del self._per_client[client]
        else:
            self._per_client[client] = n - 1


# --------------------------------------------------------------------------- auth throttle


_SHARED_THROTTLES: dict[str, AuthThrottle] = {}


def shared_throttle(vs: str) -> AuthThrottle:
    """One throttle per virtual server for all its protocols in this process, so a
    password guesser cannot get more tries by switching between SMTP, POP3 and IMAP4."""
    throttle = _SHARED_THROTTLES.get(vs)
    if throttle is None:
        throttle = _SHARED_THROTTLES[vs] = AuthThrottle()
    return throttle


# --------------------------------------------------------------------------- connections


class ConnectionClosed(Exception):
    """The client closed the connection (or it broke)."""


class IdleTimeout(Exception):
    """No complete line within the idle timeout."""


class LineTooLong(Exception):
    """A line over the protocol's limit. The rest of it is not read (an endless line would
    be read forever): the connection cannot go on, the caller answers and closes."""


def client_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Replies written in several pieces must not wait for delayed ACKs (Nagle: ~40 ms each)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


#: Replies are written without waiting for the socket unless this much is still unsent.
WRITE_HIGH_WATER = 256 * 1024
#: A send buffer that has not shrunk for this long (or the idle timeout, if shorter)
#: belongs to a client that does not read: the connection is aborted. (A graceful close
#: would wait for the buffer to drain — forever — and keep the connection's slot.)
WRITE_STALL_TIMEOUT = 60.0
#: After a goodbye line (timeout, too many errors), the connection is closed; if it is
#: still open this much later (the client does not read), it is aborted.
CLOSE_GRACE = 2.0


async def drain_watched(
    writer: asyncio.StreamWriter, stall: float = WRITE_STALL_TIMEOUT
) -> None:
    """``writer.drain()``, but a send buffer that makes no progress for ``stall`` seconds
    aborts the transport and raises ConnectionResetError."""
    transport = writer.transport
    low, _ = transport.get_write_buffer_limits()
    if transport.get_write_buffer_size() <= low:
        await writer.drain()  # not paused: returns at once (raises if the connection broke)
        return
    drain = asyncio.ensure_future(writer.drain())
    last = transport.get_write_buffer_size()
    try:
        while True:
            done, _ = await asyncio.wait({drain}, timeout=stall)
            if done:
                drain.result()
                return
            size = transport.get_write_buffer_size()
            if size >= last:
                transport.abort()
                raise ConnectionResetError(f"the client read nothing for {stall:g} s")
            last = size
    finally:
        if not drain.done():
            drain.cancel()


def close_soon(
    transport: asyncio.BaseTransport, goodbye: bytes = b"", grace: float = CLOSE_GRACE
) -> None:
    """Writes ``goodbye`` (if any) and closes; aborts if the close has not finished
    ``grace`` seconds later, so a client that does not read cannot keep the slot."""
    # Duck-typed: uvloop's transports are not registered as asyncio's Transport classes.
    write = getattr(transport, "write", None)
    if goodbye and not transport.is_closing() and write is not None:
        with contextlib.suppress(Exception):
            write(goodbye)
    transport.close()
    abort = getattr(transport, "abort", None)
    if abort is not None:
        asyncio.get_running_loop().call_later(grace, abort)


_recv = threading.local()  # one receive buffer per thread (per event loop)


class BufferedStreamProtocol(asyncio.StreamReaderProtocol, asyncio.BufferedProtocol):
    """A StreamReaderProtocol that reads with ``recv_into`` a reused buffer. The plain
    protocol receives into a fresh 256 KiB bytes object per read, which glibc may serve
    with mmap, mremap and munmap: three system calls per command, the largest cost after
    send() in the POP3 RETR profile. The transport fills the buffer and calls
    :meth:`buffer_updated` at once, on the loop's thread; the bytes are copied out there,
    so one buffer per thread serves all its connections. (uvloop, which reads into a
    reused buffer of its own, calls :meth:`data_received` directly.)"""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> None:
        super().__init__(reader, connected)
        self._reader = reader
        #: See :meth:`Connection.set_line_hook`.
        self.line_hook: Callable[[bytes], bool] | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        view: memoryview | None = getattr(_recv, "view", None)
        if view is None:
            view = _recv.view = memoryview(bytearray(RECV_CHUNK))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_recv.view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        # uvloop never calls get_buffer/buffer_updated on a protocol that is also an
        # asyncio.Protocol (as every StreamReaderProtocol is): it calls this directly,
        # so the line hook is offered here, on both loops.
        hook = self.line_hook
        if (hook is not None and data.find(b"\n") == len(data) - 1 and self._reader_waits()
                and hook(data)):
            return
        super().data_received(data)

    def _reader_waits(self) -> bool:
        """The session is blocked reading its next line, with nothing buffered."""
        reader = self._reader
        return (getattr(reader, "_waiter", None) is not None
                and not getattr(reader, "_buffer", b"x"))


class Connection:
    """One client connection of a stream protocol.

    Idle timeout: one watchdog timer per connection (not a timer per read or write, which
    showed in the POP3 profile) closes the connection once no complete line was read and
    nothing was sent for ``idle_timeout`` seconds (bytes without a line end do not
    count); the blocked read then raises :class:`IdleTimeout`. ``idle_timeout`` may be
    changed at any time. :meth:`set_deadline` adds a fixed limit (the pre-login timeout),
    and a send buffer that stops draining aborts the connection (:func:`drain_watched`).
    ``timeout_reply`` is written before a timeout closes the connection.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        endpoint: Endpoint,
        idle_timeout: float,
        protocol: asyncio.BaseProtocol | None = None,
    ) -> None:
        self.reader = reader
        self._protocol = protocol
        self.writer = writer
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self.client = client_address(writer.transport)
        local = writer.get_extra_info("sockname")
        self.local_address = str(local[0]) if isinstance(local, tuple) else ""
        self.tls = endpoint.implicit_tls
        self.timed_out = False
        self.timeout_reply = b""
        self.write_stall = WRITE_STALL_TIMEOUT
        self._loop = asyncio.get_running_loop()
        self.last_activity = self._loop.time()
        self._watchdog: asyncio.TimerHandle | None = self._loop.call_later(
            idle_timeout, self._check_idle
        )
        self._deadline: asyncio.TimerHandle | None = None

    def _check_idle(self) -> None:
        idle = self._loop.time() - self.last_activity
        if idle >= self.idle_timeout:
            self._watchdog = None
            self._time_out(self.timeout_reply)
            return
        self._watchdog = self._loop.call_later(self.idle_timeout - idle, self._check_idle)

    def _time_out(self, goodbye: bytes) -> None:
        self.timed_out = True
        close_soon(self.writer.transport, goodbye)

    def set_deadline(self, seconds: float | None, goodbye: bytes = b"") -> None:
        """Ends the connection ``seconds`` from now, writing ``goodbye``, whatever the
        client does meanwhile; None cancels it (the client logged in)."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if seconds is not None:
            self._deadline = self._loop.call_later(seconds, self._time_out, goodbye)

    def _closed(self, exc: BaseException) -> Exception:
        if self.timed_out:
            return IdleTimeout()
        return ConnectionClosed(str(exc) or type(exc).__name__)

    def touch(self) -> None:
        """Something was sent or read outside :meth:`send` / :meth:`readline`."""
        self.last_activity = self._loop.time()

    def set_line_hook(self, hook: Callable[[bytes], bool] | None) -> None:
        """``hook(line)`` is offered each complete line that arrives alone while the
        handler waits in :meth:`readline` with nothing buffered; it returns True when it
        has answered the line (which then never reaches the reader), False to leave it
        to the handler. It runs in the read callback: no await, no task wake-up."""
        if isinstance(self._protocol, BufferedStreamProtocol):
            self._protocol.line_hook = hook

    async def readline(self, limit: int) -> bytes:
        """One line including its line ending (LF or CRLF). Raises IdleTimeout,
        ConnectionClosed, or LineTooLong (then the connection must be closed)."""
        try:
            line = await self._readline(limit)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            raise self._closed(exc) from None
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        self.last_activity = self._loop.time()
        return line

    async def _readline(self, limit: int) -> bytes:
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise LineTooLong() from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise ConnectionClosed("end of stream") from None
            raise ConnectionClosed("end of stream inside a line") from None
        if len(line) > limit:
            raise LineTooLong()
        return line

    async def read_exactly(self, n: int) -> bytes:
        try:
            data = await self.reader.readexactly(n)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            raise self._closed(exc) from None
        self.last_activity = self._loop.time()
        return data

    async def send(self, data: bytes) -> None:
        if self.writer.transport.is_closing():
            raise self._closed(ConnectionError("connection closed"))
        self.writer.write(data)
        self.last_activity = self._loop.time()
        if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await drain_watched(self.writer, self.write_stall)
            except (ConnectionError, ssl.SSLError) as exc:
                raise self._closed(exc) from None
            self.last_activity = self._loop.time()

    def pending_input(self) -> bool:
        """Bytes the client sent that were not read yet (pipelined after STLS?)."""
        buffer = getattr(self.reader, "_buffer", b"")
        return len(buffer) > 0

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Upgrades to TLS. Plaintext the client sent before the handshake is discarded,
        so it cannot be injected into the protected session (CVE-2011-0411): the buffer
        is cleared after the last plaintext reply has drained, with no await between the
        clear and the switch of the transport to TLS (after which no plaintext reaches
        the reader), so nothing that arrives during the drain survives either."""
        try:
            await drain_watched(self.writer, self.write_stall)
            buffer = getattr(self.reader, "_buffer", None)
            if isinstance(buffer, bytearray):
                buffer.clear()
            # StreamWriter.start_tls drains first, which does not yield once drained.
            await self.writer.start_tls(context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as exc:
            raise ConnectionClosed(f"TLS handshake failed: {exc}") from None
        self.tls = True
        self.last_activity = self._loop.time()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.set_deadline(None)
        self.writer.close()


StreamHandler = Callable[[Connection], Awaitable[None]]
ProtocolFactory = Callable[[Endpoint], asyncio.BaseProtocol]


# --------------------------------------------------------------------------- listener


class Listener:
    """The servers of one protocol on one address: one per endpoint."""

    def __init__(
        self,
        name: str,
        address: str,
        endpoints: Sequence[Endpoint],
        tls_context: ssl.SSLContext | None,
        limits: ListenerLimits,
        *,
        busy_reply: bytes = b"",
    ) -> None:
        if any(e.implicit_tls for e in endpoints) and tls_context is None:
            raise ValueError(f"{name}: an implicit-TLS port needs a TLS context")
        self.name = name
        self.address = address
        self.endpoints = [e for e in endpoints if e.port]
        self.tls_context = tls_context
        self.limits = limits
        self.admission = Admission(limits, name)
        self.busy_reply = busy_reply
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()

    def _ssl_for(self, endpoint: Endpoint) -> ssl.SSLContext | None:
        return self.tls_context if endpoint.implicit_tls else None

    async def start_streams(self, handler: StreamHandler) -> None:
        loop = asyncio.get_running_loop()
        try:
            for endpoint in self.endpoints:

                def factory(ep: Endpoint = endpoint) -> asyncio.BaseProtocol:
                    reader = asyncio.StreamReader(limit=READ_LIMIT)
                    protocol: list[BufferedStreamProtocol] = []

                    async def on_connect(
                        r: asyncio.StreamReader, w: asyncio.StreamWriter
                    ) -> None:
                        await self._serve_stream(handler, ep, r, w, protocol.pop())

                    protocol.append(BufferedStreamProtocol(reader, on_connect))
                    return protocol[0]

                self._servers.append(await self._create(loop, factory, endpoint))
        except BaseException:
            await self.close()
            raise

    async def start_protocol(self, factory: ProtocolFactory) -> None:
        loop = asyncio.get_running_loop()
        try:
            for endpoint in self.endpoints:
                self._servers.append(
                    await self._create(loop, functools.partial(factory, endpoint), endpoint)
                )
        except BaseException:
            await self.close()
            raise

    async def _create(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.BaseProtocol],
        endpoint: Endpoint,
    ) -> asyncio.Server:
        tls = self._ssl_for(endpoint)
        try:
            return await loop.create_server(
                factory,
                self.address,
                endpoint.port,
                ssl=tls,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls else None,
                reuse_address=True,
                backlog=512,
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"{self.name}: cannot listen on {self.address}:{endpoint.port}: "
                f"{exc.strerror or exc}{in_use_note(exc, self.address, endpoint.port)}"
            ) from exc

    async def _serve_stream(
        self,
        handler: StreamHandler,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: BufferedStreamProtocol | None = None,
    ) -> None:
        set_nodelay(writer.transport)
        client = client_address(writer.transport)
        if not self.admission.admit(client):
            with contextlib.suppress(Exception):
                writer.write(self.busy_reply)
                writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._connections.add(writer)
        conn = Connection(reader, writer, endpoint, self.limits.idle_timeout, protocol)
        conn.write_stall = min(self.limits.idle_timeout, WRITE_STALL_TIMEOUT)
        try:
            await handler(conn)
        except (ConnectionClosed, IdleTimeout, ConnectionError):
            pass
        except asyncio.CancelledError:
            # Listener.close(): end quietly; this task is the connection's top level
            # (asyncio's stream callback would log a cancelled task as an error).
            pass
        except Exception as exc:
            # A bug in a protocol handler ends this connection only, never the listener.
            log_event(f"{self.name}_error", message=f"session failed: {type(exc).__name__}: "
                      f"{exc}", client=client)
        finally:
            conn.set_line_hook(None)
            self.admission.release(client)
            self._connections.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            conn.close()

    @property
    def ports(self) -> list[int]:
        """The bound ports, in the order of the (enabled) endpoints."""
        out: list[int] = []
        for server in self._servers:
            for sock in server.sockets:
                out.append(int(sock.getsockname()[1]))
                break
        return out

    def is_serving(self) -> bool:
        return bool(self._servers) and all(s.is_serving() for s in self._servers)

    async def close(self) -> None:
        """Stops listening and closes the stream connections still open."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for writer in list(self._connections):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for server in servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await server.wait_closed()
