"""The etcd v3 backend of the coordination store: a thin adapter over ``aetcd``.

aetcd 1.0 gives us the generated gRPC stubs. The adapter opens the gRPC
channels itself and calls the stubs directly, which gives every call one error
path, a deadline and etcd's "require a leader" metadata, and adds what aetcd
lacks:

* **Endpoint lists.** One gRPC channel per endpoint; a call goes to the current
  endpoint, skipping ones whose channel is known to be down, and a failure moves
  the next call to the next endpoint (etcd's own clientv3 does the same). So does a
  call its caller cancelled: a frozen member is only ever seen as slow. Either also
  makes the watch streams on that member probe it at once.
* **Bounded retries.** Every attempt has a deadline. Reads and other idempotent
  calls are retried on any transport failure; writes (put, delete, txn, grant,
  compact) only when the request certainly never reached a server that could
  apply it (no connection, or a member without a leader refusing it up front).
  Otherwise the outcome is unknown and the caller gets :class:`StoreUnavailable`
  and must re-read, as :meth:`Store.txn` documents.
* **Watch resume.** A broken watch stream is re-created from the last delivered
  revision + 1 (on another endpoint if need be), so the consumer sees no gap; an
  idle stream is probed with progress requests so that a hung server is noticed.
* **TLS and authentication** (``etcds://``; aetcd 1.0 has neither TLS nor token
  renewal). Channels are opened with the CA, client certificate and key of
  :class:`EtcdCredentials`. With a user, a token from etcd's Authenticate call
  goes with every request; a token etcd no longer accepts (expired, lost by a
  restarted member, older than the auth store) is replaced and the request sent
  again: etcd refuses such a request before applying it, so this is safe even
  for writes (clientv3 does the same).

Every gRPC failure surfaces as :class:`StoreUnavailable` (naming the endpoints),
:class:`StoreCredentialsError` (a certificate not trusted either way, a wrong
password, a permission denied), :class:`LeaseNotFound`, :class:`Compacted` or
:class:`CoordError`; never as a raw gRPC exception and never as a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

# gRPC's fork support runs handlers in every forked child; a resource host that
# talks to etcd and then starts a service (fork + exec) saw those children abort
# in gRPC's poller. Our children exec at once and never use gRPC: switch it off,
# before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
# gRPC's C core logs TLS handshake failures to stderr in its own format; our
# errors carry the same detail in one line. GRPC_VERBOSITY=debug turns it back on.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import aetcd
import grpc.aio  # type: ignore[import-untyped]
from aetcd import rpc

from clustermail.coord.api import (
    Compacted,
    Compare,
    CoordError,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    Lease,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    Store,
    StoreCredentialsError,
    StoreUnavailable,
    Target,
    TxnOp,
    TxnResult,
    to_bytes,
)
from clustermail.coord.etcd_credentials import EtcdCredentials

T = TypeVar("T")

# etcd rejects a request with "etcdserver: no leader" *before* handling it when
# this metadata is present, instead of queueing it on a member that lost its
# leader; that makes the error safe to retry even for writes (clientv3 does it).
_METADATA = (("hasleader", "true"),)

_CHANNEL_OPTIONS: dict[str, Any] = {
    # Reconnect quickly to a member that comes back (gRPC's default backoff grows to 2 min).
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Transport keepalive for long-lived streams; etcd's server refuses pings
    # more often than every 5 s and pings without an active call.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.http2.max_pings_without_data": 0,
    # A large range must not fail on gRPC's 4 MiB default.
    "grpc.max_receive_message_length": -1,
    # An http_proxy in the environment must never capture etcd traffic.
    "grpc.enable_http_proxy": 0,
}

_COMPARE_TARGET = {
    Target.VERSION: 0,
    Target.CREATE: 1,
    Target.MOD: 2,
    Target.VALUE: 3,
    Target.LEASE: 4,
}
_COMPARE_RESULT = {Op.EQ: 0, Op.GT: 1, Op.LT: 2, Op.NE: 3}
_COMPACTED = "required revision has been compacted"
_FUTURE_REVISION = "required revision is a future revision"
_LEASE_NOT_FOUND = "requested lease not found"
#: Seconds etcd keeps a lease its holder's peers expire beyond its TTL (see ``grant``).
_BACKSTOP = 1
# etcd's answers about authentication (rpctypes in etcd's api/v3rpc).
_AUTH_FAILED = "authentication failed"
_AUTH_NOT_ENABLED = "authentication is not enabled"
_INVALID_TOKEN = "invalid auth token"
_OLD_AUTH_REVISION = "revision of auth store is old"
_USER_EMPTY = "user name is empty"
_PERMISSION_DENIED = "permission denied"


def _encode_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _decode_key(key: bytes) -> str:
    # surrogateescape: a non-UTF-8 key written by another client still round-trips.
    return key.decode("utf-8", "surrogateescape")


def _range_of(prefix: str) -> tuple[bytes, bytes]:
    """etcd's [key, range_end) for every key starting with ``prefix``."""
    if not prefix:
        return b"\0", b"\0"  # etcd's convention for "the whole key space"
    key = _encode_key(prefix)
    end = aetcd.utils.prefix_range_end(key)
    if end == key:  # all 0xff bytes: no upper bound
        end = b"\0"
    return key, end


def _kv(kv: Any) -> KeyValue:
    return KeyValue(
        key=_decode_key(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _event(ev: Any) -> Event:
    kv = ev.kv
    if ev.type == rpc.Event.DELETE:
        return Event(EventType.DELETE, _decode_key(kv.key), b"", int(kv.mod_revision))
    return Event(
        EventType.PUT,
        _decode_key(kv.key),
        bytes(kv.value),
        int(kv.mod_revision),
        create_revision=int(kv.create_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _compare(c: Compare) -> Any:
    msg = rpc.Compare(
        key=_encode_key(c.key),
        target=_COMPARE_TARGET[c.target],
        result=_COMPARE_RESULT[c.op],
    )
    if c.target is Target.VALUE:
        if isinstance(c.operand, int):
            raise TypeError(f"compare on the value of {c.key!r} needs a bytes operand")
        msg.value = to_bytes(c.operand)
        return msg
    if not isinstance(c.operand, int) or isinstance(c.operand, bool):
        raise TypeError(f"compare on {c.target.value} of {c.key!r} needs an int operand")
    if c.target is Target.VERSION:
        msg.version = c.operand
    elif c.target is Target.CREATE:
        msg.create_revision = c.operand
    elif c.target is Target.MOD:
        msg.mod_revision = c.operand
    else:
        msg.lease = c.operand
    return msg


def _request_op(op: TxnOp) -> Any:
    if isinstance(op, Put):
        return rpc.RequestOp(
            request_put=rpc.PutRequest(
                key=_encode_key(op.key), value=to_bytes(op.value), lease=op.lease
            )
        )
    if isinstance(op, Delete):
        if op.prefix:
            key, end = _range_of(op.key)
            req = rpc.DeleteRangeRequest(key=key, range_end=end)
        else:
            req = rpc.DeleteRangeRequest(key=_encode_key(op.key))
        return rpc.RequestOp(request_delete_range=req)
    if isinstance(op, Get):
        if op.prefix:
            key, end = _range_of(op.key)
            rreq = rpc.RangeRequest(key=key, range_end=end)
        else:
            rreq = rpc.RangeRequest(key=_encode_key(op.key))
        return rpc.RequestOp(request_range=rreq)
    raise TypeError(f"not a transaction op: {op!r}")


class _StreamBroken(Exception):
    """A watch stream ended or was cancelled by etcd; the watch resumes."""


class _Failure:
    """A classified gRPC failure."""

    #: The request certainly did not reach a member that could apply it.
    NOT_SENT = "not sent"
    #: It may or may not have been applied (timeout, connection lost mid-call).
    UNKNOWN = "unknown"
    #: The server answered with an error: no retry helps.
    FINAL = "final"


def _classify(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, _StreamBroken)):
        return _Failure.UNKNOWN
    if not isinstance(exc, rpc.AioRpcError):
        return _Failure.FINAL
    code = exc.code()
    details = exc.details() or ""
    if code == rpc.StatusCode.UNAVAILABLE:
        if (
            details.startswith("failed to connect to all addresses")
            or "DNS resolution failed" in details
            or details.startswith("etcdserver: no leader")
            or details.startswith("etcdserver: not capable")
            or "not supported for learner" in details
        ):
            return _Failure.NOT_SENT
        return _Failure.UNKNOWN
    if code == rpc.StatusCode.RESOURCE_EXHAUSTED and "too many requests" in details:
        return _Failure.NOT_SENT
    if code in (rpc.StatusCode.DEADLINE_EXCEEDED, rpc.StatusCode.CANCELLED,
                rpc.StatusCode.UNKNOWN, rpc.StatusCode.INTERNAL):
        # UNKNOWN/INTERNAL: e.g. a stream torn down by a dying member.
        return _Failure.UNKNOWN
    return _Failure.FINAL


def _token_rejected(exc: BaseException) -> bool:
    """etcd refused the request's token before applying it: get a new one."""
    if not isinstance(exc, rpc.AioRpcError):
        return False
    details = exc.details() or ""
    return _INVALID_TOKEN in details or _OLD_AUTH_REVISION in details


def _tls_refusal(exc: BaseException) -> str | None:
    """What a TLS handshake failure says about the certificates (no retry
    fixes it), or None for any other failure."""
    if not isinstance(exc, rpc.AioRpcError) or exc.code() != rpc.StatusCode.UNAVAILABLE:
        return None
    details = exc.details() or ""
    if "Tls handshake failed" in details:
        # "...: SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:
        # CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK"
        tail = details.rsplit("OPENSSL_internal:", 1)[-1].removesuffix(": OK")
        code, _, why = tail.partition(": ")
        why = why.strip() or code.strip() or "no reason given"
        if code == "CERTIFICATE_VERIFY_FAILED" or "certificate" in why.lower():
            return (f"certificate verify failed: {why} (is ca= the CA that signed the "
                    "member's certificate?)")
        return f"{why} ({code.strip()})" if why != code.strip() else why
    if "Hostname Verification" in details or "Peer name" in details:
        return ("certificate verify failed: the member's certificate does not name "
                "the host we connected to (its subjectAltName)")
    if ("TSI_DATA_CORRUPTED" in details or "ALERT_BAD_CERTIFICATE" in details
            or "CERTIFICATE_REQUIRED" in details or "ALERT_UNKNOWN_CA" in details):
        # TLS 1.3: the member's alert about our certificate arrives after the
        # handshake, as a record that fails to decrypt.
        return ("the member refused our TLS connection: it wants a client certificate "
                "signed by a CA it trusts (cert=, key=)")
    return None


def _details(exc: BaseException) -> str:
    if isinstance(exc, rpc.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, TimeoutError):
        return "no answer before the deadline"
    if isinstance(exc, _StreamBroken):
        return str(exc)
    return repr(exc)


class _Endpoint:
    """One member: its gRPC channel (plain or TLS) and the stubs we call on it."""

    def __init__(self, host: str, port: int, tls: Any) -> None:
        self.name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        options = list(_CHANNEL_OPTIONS.items())
        # The channel connects lazily: no I/O here.
        self.channel: Any = (
            grpc.aio.secure_channel(self.name, tls, options=options) if tls is not None
            else grpc.aio.insecure_channel(self.name, options=options)
        )
        self.kvstub: Any = rpc.KVStub(self.channel)
        self.leasestub: Any = rpc.LeaseStub(self.channel)
        self.watchstub: Any = rpc.WatchStub(self.channel)
        self.authstub: Any = rpc.AuthStub(self.channel)
        #: Resolved when a call to this member failed or was given up on: the watch
        #: streams on it probe at once instead of after their idle timeout.
        self._suspect: asyncio.Future[None] | None = None

    def suspicion(self) -> asyncio.Future[None]:
        if self._suspect is None:
            self._suspect = asyncio.get_running_loop().create_future()
        return self._suspect

    def suspect(self) -> None:
        fut, self._suspect = self._suspect, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def close(self) -> None:
        await self.channel.close()


class EtcdStore(Store):
    """A :class:`Store` on an etcd v3 cluster (etcd ≥ 3.4)."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], *, timeout: float,
                 retries: int, credentials: EtcdCredentials | None = None,
                 url: str | None = None) -> None:
        """``credentials``: TLS (and maybe a user); None: plain gRPC."""
        if not endpoints:
            raise ValueError("an etcd store needs at least one endpoint")
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        tls = None
        if credentials is not None:
            tls = grpc.ssl_channel_credentials(
                root_certificates=credentials.ca,
                private_key=credentials.key,
                certificate_chain=credentials.cert,
            )
        self._endpoints = [_Endpoint(h, int(p), tls) for h, p in endpoints]
        self._names = ",".join(e.name for e in self._endpoints)
        self.endpoint_count = len(self._endpoints)
        scheme = "etcd" if credentials is None else "etcds"
        self.url = url or f"{scheme}://{self._names}"
        self._timeout = timeout
        self._retries = retries
        self._credentials = credentials
        #: The etcd auth token while we hold one (only with a user).
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self._current = 0
        self._closed = False
        #: Live watch streams and their reader tasks, cancelled by close().
        self._calls: set[Any] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: etcd's smallest lease TTL, once a ``peers_expire`` grant has learnt it.
        self._min_ttl: int | None = None

    @classmethod
    async def connect(cls, endpoints: Sequence[tuple[str, int]], *, timeout: float = 2.0,
                      retries: int = 3, credentials: EtcdCredentials | None = None,
                      url: str | None = None) -> EtcdStore:
        """Opens the store and checks that the cluster answers (and, with a
        user, that it accepts our password).

        ``timeout`` bounds each attempt of a call; a call makes at most
        ``1 + retries`` attempts (rotating through the endpoints) and returns or
        raises within ``2 * timeout`` seconds. A broken watch gets the same
        budget to be re-established. Raises :class:`StoreUnavailable` or
        :class:`StoreCredentialsError`.
        """
        store = cls(endpoints, timeout=timeout, retries=retries, credentials=credentials,
                    url=url)
        try:
            await store.revision()
        except BaseException:
            await store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"EtcdStore({self.url!r})"

    # ------------------------------------------------------------------ plumbing

    def _unavailable(self, what: str, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"etcd at {self._names}: {what}: {why}")

    def _pick(self) -> int:
        """The endpoint for the next attempt: the current one unless its channel
        is known to be down and another one is not."""
        n = len(self._endpoints)
        for step in range(n):
            i = (self._current + step) % n
            state = self._endpoints[i].channel.get_state(try_to_connect=False)
            if state != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                self._current = i
                return i
        return self._current

    def _failed(self, index: int) -> None:
        # The next call starts at the next endpoint, and the watches on this one check
        # it now: a frozen member's streams stay open and silent.
        self._endpoints[index].suspect()
        if self._current == index:
            self._current = (index + 1) % len(self._endpoints)

    def _backoff(self, attempt: int) -> float:
        # Retries are spread over about one timeout: ..., t/8, t/4, t/2.
        return float(self._timeout * 2.0 ** (attempt - 1 - self._retries))

    async def _call(self, what: str, fn: Callable[[Any], Awaitable[T]], *,
                    idempotent: bool) -> T:
        """Runs ``fn(endpoint)``, retrying as the module doc says, and returns or
        raises within ``2 * timeout`` seconds. Server errors that no retry can
        fix are re-raised as AioRpcError for the caller to map."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self._timeout
        last: BaseException | None = None
        refused: dict[int, str] = {}  # endpoint → why its TLS handshake failed
        attempts = 0
        backoff = True
        while attempts <= self._retries:
            if self._closed:
                raise self._unavailable(what, "the store is closed")
            if attempts and backoff:
                await asyncio.sleep(min(self._backoff(attempts), deadline - loop.time()))
            backoff = True
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempts += 1
            index = self._pick()
            endpoint = self._endpoints[index]
            token = self._token
            sent = False
            try:
                async with asyncio.timeout(min(self._timeout, remaining)):
                    token = await self._token_for(endpoint)
                    sent = True
                    return await fn(endpoint)
            except asyncio.CancelledError:
                # The caller stopped waiting (its own deadline, e.g. a lease keeper's):
                # to it this endpoint did not answer in time, which is all a frozen or
                # partitioned member ever shows, since its connection still looks up.
                self._failed(index)
                raise
            except (rpc.AioRpcError, TimeoutError) as exc:
                last = exc
                if _token_rejected(exc):
                    # Refused before being applied: safe to send again, at once.
                    self._drop_token(token)
                    backoff = False
                    continue
                self._note_refusal(refused, index, exc)
                kind = _classify(exc)
                if not sent and kind == _Failure.UNKNOWN:
                    kind = _Failure.NOT_SENT  # lost while authenticating: never sent
                if kind == _Failure.FINAL:
                    raise
                self._failed(index)
                if kind == _Failure.UNKNOWN and not idempotent:
                    raise self._unavailable(
                        what,
                        f"outcome unknown ({_details(exc)}); re-read and decide again",
                    ) from None
        if last is not None and _tls_refusal(last) is not None:
            raise self._refused(refused) from None
        raise self._unavailable(
            what,
            f"no answer after {attempts} attempt(s) in {2 * self._timeout:g}s "
            f"(last: {_details(last) if last else 'none'})",
        ) from None

    def _final(self, what: str, exc: rpc.AioRpcError) -> CoordError:
        """Maps a server error that no retry fixes."""
        details = exc.details() or ""
        code = exc.code()
        if code == rpc.StatusCode.PERMISSION_DENIED or _PERMISSION_DENIED in details:
            return self._permission_denied(what)
        if _USER_EMPTY in details:
            return StoreCredentialsError(
                f"etcd at {self._names} requires authentication: add user=NAME and "
                "password_file=/path (or a client certificate whose CN is an etcd user, "
                "on members run with --client-cert-auth)")
        if code == rpc.StatusCode.INVALID_ARGUMENT:
            return CoordError(f"etcd rejected {what}: {details}")
        return self._unavailable(what, _details(exc))

    def _timeout_kw(self) -> dict[str, Any]:
        return {"timeout": self._timeout, "metadata": self._metadata()}

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._token is None:
            return _METADATA
        return (*_METADATA, ("token", self._token))

    # ------------------------------------------------------------------ TLS and auth

    def _who(self) -> str:
        creds = self._credentials
        if creds is not None and creds.user is not None:
            return f"user {creds.user!r}"
        if creds is not None and creds.cert_cn:
            return f"the client certificate's user {creds.cert_cn!r}"
        return "an unauthenticated client"

    def _permission_denied(self, what: str) -> StoreCredentialsError:
        return StoreCredentialsError(
            f"etcd at {self._names}: permission denied to {self._who()} for {what} "
            "(clustermail needs read and write on the whole key space: the root user, "
            "or a role granted `readwrite --from-key ''`)")

    def _note_refusal(self, refused: dict[int, str], index: int, exc: BaseException) -> None:
        """Records a TLS refusal by endpoint ``index``; raises when every
        endpoint refused (another endpoint might still accept us)."""
        why = _tls_refusal(exc)
        if why is None:
            return
        refused[index] = why
        if len(refused) == len(self._endpoints):
            raise self._refused(refused) from None

    def _refused(self, refused: dict[int, str]) -> StoreCredentialsError:
        return StoreCredentialsError("; ".join(
            f"etcd at {self._endpoints[i].name}: TLS handshake failed: {why}"
            for i, why in sorted(refused.items())))

    async def _token_for(self, endpoint: _Endpoint) -> str | None:
        """The auth token to send (None without a user), authenticating through
        ``endpoint`` when we hold none. One Authenticate at a time: the others
        wait for its token."""
        creds = self._credentials
        if creds is None or creds.user is None:
            return None
        async with self._auth_lock:
            if self._token is not None:
                return self._token
            request = rpc.AuthenticateRequest(name=creds.user, password=creds.password or "")
            try:
                resp = await endpoint.authstub.Authenticate(request, timeout=self._timeout)
            except rpc.AioRpcError as exc:
                details = exc.details() or ""
                if _AUTH_FAILED in details:
                    raise StoreCredentialsError(
                        f"etcd at {endpoint.name}: authentication failed for user "
                        f"{creds.user!r}: wrong user name or password (password from "
                        f"{creds.password_source})") from None
                if _AUTH_NOT_ENABLED in details:
                    raise StoreCredentialsError(
                        f"etcd at {endpoint.name}: a user and password are configured but "
                        "authentication is not enabled on the cluster: run `etcdctl auth "
                        "enable`, or drop user= and the password option") from None
                raise
            self._token = str(resp.token)
            return self._token

    def _drop_token(self, token: str | None) -> None:
        # Only the token that was refused: another task may have a newer one.
        if token is not None and self._token == token:
            self._token = None

    # ------------------------------------------------------------------ keys

    async def _range(self, key: bytes, range_end: bytes | None, what: str) -> Any:
        req = rpc.RangeRequest(key=key)
        if range_end is not None:
            req.range_end = range_end

        async def go(c: Any) -> Any:
            return await c.kvstub.Range(req, **self._timeout_kw())

        try:
            return await self._call(what, go, idempotent=True)
        except rpc.AioRpcError as exc:
            raise self._final(what, exc) from None

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._range(_encode_key(key), None, f"get {key!r}")
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str) -> RangeResult:
        key, end = _range_of(prefix)
        resp = await self._range(key, end, f"range {prefix!r}")
        return RangeResult([_kv(kv) for kv in resp.kvs], int(resp.header.revision))

    async def revision(self) -> int:
        # Any linearizable read carries the store revision in its header.
        resp = await self._range(b"\0", None, "revision")
        return int(resp.header.revision)

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        req = rpc.PutRequest(key=_encode_key(key), value=to_bytes(value), lease=lease)

        async def go(c: Any) -> Any:
            return await c.kvstub.Put(req, **self._timeout_kw())

        what = f"put {key!r}"
        try:
            resp = await self._call(what, go, idempotent=False)
        except rpc.AioRpcError as exc:
            if lease and _LEASE_NOT_FOUND in (exc.details() or ""):
                raise LeaseNotFound(lease) from None
            raise self._final(what, exc) from None
        return int(resp.header.revision)

    async def _delete(self, key: bytes, range_end: bytes | None, what: str) -> int:
        req = rpc.DeleteRangeRequest(key=key)
        if range_end is not None:
            req.range_end = range_end

        async def go(c: Any) -> Any:
            return await c.kvstub.DeleteRange(req, **self._timeout_kw())

        try:
            resp = await self._call(what, go, idempotent=False)
        except rpc.AioRpcError as exc:
            raise self._final(what, exc) from None
        return int(resp.deleted)

    async def delete(self, key: str) -> bool:
        return await self._delete(_encode_key(key), None, f"delete {key!r}") > 0

    async def delete_prefix(self, prefix: str) -> int:
        key, end = _range_of(prefix)
        return await self._delete(key, end, f"delete prefix {prefix!r}")

    async def txn(
        self,
        compare: Sequence[Compare],
        then: Sequence[TxnOp] = (),
        otherwise: Sequence[TxnOp] = (),
    ) -> TxnResult:
        req = rpc.TxnRequest(
            compare=[_compare(c) for c in compare],
            success=[_request_op(op) for op in then],
            failure=[_request_op(op) for op in otherwise],
        )

        async def go(c: Any) -> Any:
            return await c.kvstub.Txn(req, **self._timeout_kw())

        what = "txn on " + ", ".join(sorted({c.key for c in compare})) if compare else "txn"
        try:
            resp = await self._call(what, go, idempotent=False)
        except rpc.AioRpcError as exc:
            if _LEASE_NOT_FOUND in (exc.details() or ""):
                leases = [op.lease for op in (*then, *otherwise)
                          if isinstance(op, Put) and op.lease]
                raise LeaseNotFound(leases[0] if leases else 0) from None
            raise self._final(what, exc) from None
        revision = int(resp.header.revision)
        responses: list[list[KeyValue] | int] = []
        for r in resp.responses:
            kind = r.WhichOneof("response")
            if kind == "response_range":
                responses.append([_kv(kv) for kv in r.response_range.kvs])
            elif kind == "response_delete_range":
                responses.append(int(r.response_delete_range.deleted))
            else:  # response_put: every put of a txn has the txn's revision
                responses.append(revision)
        return TxnResult(bool(resp.succeeded), revision, responses)

    async def compact(self, revision: int) -> None:
        req = rpc.CompactionRequest(revision=revision, physical=True)

        async def go(c: Any) -> Any:
            return await c.kvstub.Compact(req, **self._timeout_kw())

        what = f"compact to {revision}"
        try:
            # Idempotent: compacting to the same revision again is a no-op below.
            await self._call(what, go, idempotent=True)
        except rpc.AioRpcError as exc:
            details = exc.details() or ""
            if _COMPACTED in details:
                return  # already compacted at or past this revision
            if _FUTURE_REVISION in details:
                raise CoordError(
                    f"cannot compact etcd at {self._names} to revision {revision}: "
                    "it is newer than the store's current revision"
                ) from None
            raise self._final(what, exc) from None

    # ------------------------------------------------------------------ leases

    async def grant(self, ttl: float, *, peers_expire: bool = False) -> Lease:
        # etcd counts whole seconds and may raise the TTL to its minimum.
        seconds = max(1, math.ceil(ttl))
        if not peers_expire:
            resp = await self._grant(seconds)
            return Lease(int(resp.ID), float(resp.TTL))
        # etcd looks for expired leases only every 500 ms: the lease gets one more second
        # than asked, and the holder's peers revoke it on time (``expire_overdue``). Its
        # TTL is still raised to etcd's minimum, learnt once from a lease of 1 s.
        if self._min_ttl is None:
            probe = await self._grant(1)
            self._min_ttl = int(probe.TTL)
            await self.revoke(int(probe.ID))
        seconds = max(seconds, self._min_ttl)
        resp = await self._grant(seconds + _BACKSTOP)
        return Lease(int(resp.ID), float(resp.TTL) - _BACKSTOP, backstop=_BACKSTOP)

    async def _grant(self, seconds: int) -> Any:
        req = rpc.LeaseGrantRequest(TTL=seconds)

        async def go(c: Any) -> Any:
            return await c.leasestub.LeaseGrant(req, **self._timeout_kw())

        what = f"grant a lease of {seconds}s"
        try:
            # Not retried after an unknown outcome: a stray lease would only expire.
            resp = await self._call(what, go, idempotent=False)
        except rpc.AioRpcError as exc:
            raise self._final(what, exc) from None
        if resp.error:
            raise CoordError(f"etcd at {self._names} refused to {what}: {resp.error}")
        return resp

    async def keep_alive_once(self, lease_id: int) -> float:
        req = rpc.LeaseKeepAliveRequest(ID=lease_id)

        async def go(c: Any) -> Any:
            # LeaseKeepAlive is a stream: send one request, read one answer.
            call = c.leasestub.LeaseKeepAlive(iter([req]), **self._timeout_kw())
            try:
                async for reply in call:
                    return reply
            finally:
                call.cancel()
            raise TimeoutError  # stream ended without an answer: treat as lost

        what = f"keep lease {lease_id:x} alive"
        try:
            resp = await self._call(what, go, idempotent=True)
        except rpc.AioRpcError as exc:
            raise self._final(what, exc) from None
        if resp.TTL <= 0:  # etcd answers TTL 0 for an expired or revoked lease
            raise LeaseNotFound(lease_id)
        return float(resp.TTL)

    async def revoke(self, lease_id: int) -> None:
        req = rpc.LeaseRevokeRequest(ID=lease_id)

        async def go(c: Any) -> Any:
            return await c.leasestub.LeaseRevoke(req, **self._timeout_kw())

        what = f"revoke lease {lease_id:x}"
        try:
            # Idempotent: revoking a lease that is gone is a no-op below.
            await self._call(what, go, idempotent=True)
        except rpc.AioRpcError as exc:
            if _LEASE_NOT_FOUND in (exc.details() or ""):
                return
            raise self._final(what, exc) from None

    async def time_to_live(self, lease_id: int) -> float | None:
        req = rpc.LeaseTimeToLiveRequest(ID=lease_id)

        async def go(c: Any) -> Any:
            return await c.leasestub.LeaseTimeToLive(req, **self._timeout_kw())

        what = f"read the TTL of lease {lease_id:x}"
        try:
            resp = await self._call(what, go, idempotent=True)
        except rpc.AioRpcError as exc:
            if _LEASE_NOT_FOUND in (exc.details() or ""):
                return None
            raise self._final(what, exc) from None
        return None if resp.TTL < 0 else float(resp.TTL)

    async def expire_overdue(self, lease_id: int, backstop: float) -> bool:
        # The leader answers with the seconds left, truncated (int64 of a Go duration):
        # fewer than the backstop means more than the holder's TTL has passed since the
        # leader last renewed the lease. The holder measures its own deadline from the
        # send time of a renewal it saw answered, which the leader received no earlier,
        # so it has fenced itself by then, with its safety margin to spare. A leader
        # elected since extends every lease first, and a follower forwards the question
        # to the leader: neither can answer "overdue" early. The revocation goes to the
        # member that answered, as etcd's own expiry would: a deposed leader that still
        # thinks a lease overdue cannot commit it, where a retry on another member could.
        ask = rpc.LeaseTimeToLiveRequest(ID=lease_id)
        revoke = rpc.LeaseRevokeRequest(ID=lease_id)

        async def go(c: Any) -> bool:
            resp = await c.leasestub.LeaseTimeToLive(ask, **self._timeout_kw())
            if not 0 <= resp.TTL < backstop or resp.grantedTTL <= backstop:
                return False
            await c.leasestub.LeaseRevoke(revoke, **self._timeout_kw())
            return True

        what = f"expire lease {lease_id:x} if overdue"
        try:
            return await self._call(what, go, idempotent=True)
        except rpc.AioRpcError as exc:
            if _LEASE_NOT_FOUND in (exc.details() or ""):
                return False  # expired or revoked already
            raise self._final(what, exc) from None

    # ------------------------------------------------------------------ watches

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[Event]:
        """See :meth:`Store.watch`. The stream is created when iteration starts,
        so with ``start_revision=None`` "now" is the first ``__anext__``."""
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: str, start_revision: int | None) -> AsyncIterator[Event]:
        key, end = _range_of(prefix)
        what = f"watch {prefix!r}"
        loop = asyncio.get_running_loop()
        # The first revision not yet delivered. etcd reads 0 as "now"; ours
        # means the very start, which is revision 1.
        next_rev = None if start_revision is None else max(1, start_revision)
        # Re-establishing a broken stream has the budget of one call: at most
        # 1 + retries attempts within 2 * timeout.
        failures = 0
        broken_at = 0.0
        last: BaseException | None = None
        fresh_token = False  # the current token was fetched after a refusal
        refused: dict[int, str] = {}  # endpoint → why its TLS handshake failed
        while True:
            if self._closed:
                raise self._unavailable(what, "the store is closed")
            if failures:
                left = broken_at + 2 * self._timeout - loop.time()
                if failures > self._retries or left <= 0:
                    raise self._unavailable(
                        what,
                        f"stream lost and not re-established after {failures} attempt(s) "
                        f"(last: {_details(last) if last else 'none'})",
                    )
                await asyncio.sleep(min(self._backoff(failures), left))
            index = self._pick()
            endpoint = self._endpoints[index]
            stream: _WatchStream | None = None
            token: str | None = None
            try:
                async with asyncio.timeout(self._timeout):
                    token = await self._token_for(endpoint)
                stream = _WatchStream(self, endpoint)
                created = await stream.create(key, end, next_rev or 0)
                if created.compact_revision:
                    raise Compacted(next_rev or 0, int(created.compact_revision))
                if created.canceled:
                    if next_rev is None and created.header.revision:
                        # "Now" is when the watch was first asked for: the stream made
                        # again (a fresh token, another member) resumes from there, so
                        # a change made meanwhile is not missed.
                        next_rev = int(created.header.revision) + 1
                    reason = created.cancel_reason or "watch cancelled by etcd"
                    if token is not None and not fresh_token and (
                            _INVALID_TOKEN in reason or _OLD_AUTH_REVISION in reason
                            or _PERMISSION_DENIED in reason):
                        # A stale token (etcd 3.4 may call it "permission
                        # denied" too): once more at once, with a fresh one.
                        self._drop_token(token)
                        fresh_token = True
                        continue
                    if _PERMISSION_DENIED in reason:
                        raise self._permission_denied(what)
                    # e.g. the member has no leader: try another one
                    raise _StreamBroken(reason)
                if next_rev is None:
                    # "after now": the stream starts after the header's revision.
                    next_rev = int(created.header.revision) + 1
                failures = 0
                fresh_token = False
                refused.clear()
                while True:
                    resp = await stream.next()
                    if resp.compact_revision:
                        raise Compacted(next_rev, int(resp.compact_revision))
                    if resp.canceled:
                        raise _StreamBroken(resp.cancel_reason or "watch cancelled by etcd")
                    floor = next_rev
                    for ev in resp.events:
                        event = _event(ev)
                        if event.revision < floor:
                            continue  # already delivered before a resume
                        next_rev = event.revision + 1
                        yield event
            except (rpc.AioRpcError, TimeoutError, _StreamBroken) as exc:
                if _classify(exc) == _Failure.FINAL:
                    assert isinstance(exc, rpc.AioRpcError)
                    raise self._final(what, exc) from None
                self._note_refusal(refused, index, exc)
                if not failures:
                    broken_at = loop.time()
                last = exc
                failures += 1
                self._failed(index)
            finally:
                if stream is not None:
                    stream.close()

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for call in list(self._calls):
            call.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for endpoint in self._endpoints:
            with contextlib.suppress(Exception):
                await endpoint.close()


class _WatchStream:
    """One etcd watch stream: create, read with an idle probe, close."""

    def __init__(self, store: EtcdStore, endpoint: _Endpoint) -> None:
        self._store = store
        self._timeout = store._timeout
        self._endpoint = endpoint
        self._call: Any = endpoint.watchstub.Watch(metadata=store._metadata())
        store._calls.add(self._call)
        self._reader: asyncio.Task[Any] | None = None

    async def create(self, key: bytes, range_end: bytes, start_revision: int) -> Any:
        req = rpc.WatchCreateRequest(key=key, range_end=range_end, start_revision=start_revision)
        async with asyncio.timeout(self._timeout):
            await self._call.write(rpc.WatchRequest(create_request=req))
            while True:
                resp = await self._read(self._timeout)
                if resp is _IDLE:
                    continue  # the enclosing timeout bounds this loop
                if resp.created or resp.canceled or resp.compact_revision:
                    return resp

    async def next(self) -> Any:
        """The next response; _StreamBroken when the stream ended.

        After ``timeout`` seconds without a response it asks etcd for a progress
        notification; no answer within another ``timeout`` means the stream (or
        the member) is dead, raised as TimeoutError so the watch resumes. When a
        call to the same member fails or is given up on meanwhile, it asks at once
        and waits :data:`SUSPECT_PROBE` of the timeout."""
        resp = await self._read(self._timeout, suspect=True)
        if resp is not _IDLE and resp is not _SUSPECT:
            return resp
        wait = self._timeout if resp is _IDLE else self._timeout * SUSPECT_PROBE
        # Bounded by the same wait: a write to a frozen member hangs too.
        async with asyncio.timeout(wait):
            await self._call.write(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
        resp = await self._read(wait)
        if resp is _IDLE:
            raise TimeoutError
        return resp

    async def _read(self, timeout: float, *, suspect: bool = False) -> Any:
        """A response, or _IDLE after ``timeout`` seconds (with ``suspect``, _SUSPECT
        as soon as the member is suspected); _StreamBroken at the end. The pending
        read survives an idle timeout (cancelling it would cancel the whole call),
        and is reused by the next _read."""
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._call.read())
            self._store._tasks.add(self._reader)
            self._reader.add_done_callback(self._store._tasks.discard)
        waits: set[asyncio.Future[Any]] = {self._reader}
        if suspect:
            waits.add(self._endpoint.suspicion())
        done, _ = await asyncio.wait(waits, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._reader not in done:
            return _SUSPECT if done else _IDLE
        reader, self._reader = self._reader, None
        if reader.cancelled():  # by close(): not a cancellation of our caller
            raise _StreamBroken("watch stream cancelled")
        resp = reader.result()
        if resp is grpc.aio.EOF:
            raise _StreamBroken("watch stream closed by etcd")
        return resp

    def close(self) -> None:
        reader = self._reader
        if reader is not None:
            if not reader.done():
                reader.cancel()
            elif not reader.cancelled():
                reader.exception()  # retrieved: no "exception never retrieved" warning
        self._call.cancel()
        self._store._calls.discard(self._call)


_IDLE: Any = object()
_SUSPECT: Any = object()
#: The share of the timeout a suspected member's watch stream gets to answer a
#: progress request (a healthy member answers in milliseconds; a false suspicion
#: costs a resumed stream, never an event).
SUSPECT_PROBE = 0.25
