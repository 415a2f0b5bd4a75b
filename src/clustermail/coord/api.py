"""The coordination store interface: keys with revisions, transactions, leases, watches.

Every backend (embedded SQLite, etcd) implements :class:`Store` with the same
semantics, which the conformance suite in ``tests/coord`` checks. The model is
etcd's v3 data model, because etcd is the production backend and its semantics
are well specified:

* A store-wide **revision** grows by one per write operation (a transaction with
  several writes counts once; every event of it carries that revision).
* Each key has a ``create_revision``, a ``mod_revision`` and a ``version``
  (number of puts since creation; 0 means the key does not exist).
* A **lease** has a TTL; keys put with the lease are deleted when the lease is
  revoked or expires. Expiry produces ordinary delete events.
* A **watch** streams every put/delete under a prefix in revision order from a
  start revision, with no gaps; a start revision older than the compaction
  point raises :class:`Compacted`.

Safety lives in few calls: ownership and leadership are only ever taken with
:meth:`Store.txn` comparing a key's version or mod revision.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------- errors


class CoordError(Exception):
    """Base of every error raised by the coordination store layer."""


class StoreUnavailable(CoordError):
    """The store could not be reached (after the bounded retries)."""


class Compacted(CoordError):
    """A watch asked for a revision that the store has already compacted."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        # compact_revision: the oldest revision a watch may still start from.
        super().__init__(
            f"revision {requested} has been compacted; the oldest revision still "
            f"available is {compact_revision}"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class LeaseNotFound(CoordError):
    """The lease does not exist (never granted, revoked, or expired)."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} not found (expired or revoked)")
        self.lease_id = lease_id


class InvalidStoreURL(CoordError):
    """A store URL that names no backend or is malformed."""


class StoreCredentialsError(CoordError):
    """Our credentials for the store are unusable or were refused: a CA,
    certificate, key or password file that is missing, unreadable or not
    private; a server certificate we do not trust, a client certificate the
    server does not trust, a wrong password, a permission the user lacks.
    Retrying does not help; an operator must act."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def text(self) -> str:
        return self.value.decode()


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    key: str
    #: The new value for a put, ``b""`` for a delete.
    value: bytes
    #: The revision of the write that produced this event.
    revision: int
    #: For puts: the key's create revision, version and lease after the put.
    create_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    #: The store revision at which the range was read.
    revision: int


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    #: The TTL the store granted (a backend may round up the requested TTL).
    ttl: float
    #: Seconds the store itself keeps the lease beyond ``ttl`` when its holder's peers
    #: are to revoke it once overdue (``grant(..., peers_expire=True)``); 0 otherwise.
    backstop: float = 0.0


# --------------------------------------------------------------------------- txn


class Target(enum.Enum):
    VALUE = "value"
    VERSION = "version"
    CREATE = "create"
    MOD = "mod"
    LEASE = "lease"


class Op(enum.Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    GT = ">"


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction on one key.

    A missing key has version, create and mod revision 0, lease 0 and an empty
    value; a value comparison with a missing key is false (as in etcd).
    """

    key: str
    target: Target
    op: Op
    operand: bytes | int

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, Target.VERSION, Op.EQ, 0)

    @staticmethod
    def exists(key: str) -> Compare:
        return Compare(key, Target.VERSION, Op.GT, 0)

    @staticmethod
    def value_is(key: str, value: bytes | str) -> Compare:
        return Compare(key, Target.VALUE, Op.EQ, _b(value))

    @staticmethod
    def mod_is(key: str, revision: int) -> Compare:
        return Compare(key, Target.MOD, Op.EQ, revision)

    @staticmethod
    def version_is(key: str, version: int) -> Compare:
        return Compare(key, Target.VERSION, Op.EQ, version)

    @staticmethod
    def create_is(key: str, revision: int) -> Compare:
        return Compare(key, Target.CREATE, Op.EQ, revision)

    @staticmethod
    def lease_is(key: str, lease_id: int) -> Compare:
        return Compare(key, Target.LEASE, Op.EQ, lease_id)

    def holds(self, kv: KeyValue | None) -> bool:
        """Evaluates this comparison against a key's current state (pure)."""
        if self.target is Target.VALUE:
            if kv is None:
                return False
            return _cmp(kv.value, self.op, _b(self.operand))
        actual: int
        if kv is None:
            actual = 0
        elif self.target is Target.VERSION:
            actual = kv.version
        elif self.target is Target.CREATE:
            actual = kv.create_revision
        elif self.target is Target.MOD:
            actual = kv.mod_revision
        else:
            actual = kv.lease
        if not isinstance(self.operand, int):
            raise TypeError(f"compare on {self.target.value} needs an int operand")
        return _cmp(actual, self.op, self.operand)


def _cmp(a: bytes | int, op: Op, b: bytes | int) -> bool:
    if op is Op.EQ:
        return a == b
    if op is Op.NE:
        return a != b
    if op is Op.LT:
        return a < b  # type: ignore[operator]
    return a > b  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes | str
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False


TxnOp = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    #: The store revision after the transaction.
    revision: int
    #: One entry per op of the branch taken: the kvs read by a Get, the number
    #: of keys deleted by a Delete, the new revision for a Put.
    responses: list[list[KeyValue] | int] = field(default_factory=list)


# --------------------------------------------------------------------------- store


class Store(abc.ABC):
    """The coordination store. All methods may raise :class:`StoreUnavailable`
    once the backend's bounded retries are exhausted; none hangs forever."""

    #: The URL this store was opened from (for messages).
    url: str
    #: How many servers a call can go to. With more than one, a call its caller gave up
    #: on sends the next call to another (a frozen server answers nothing, ever).
    endpoint_count: int = 1

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None:
        """Reads one key (linearizable)."""

    @abc.abstractmethod
    async def range(self, prefix: str) -> RangeResult:
        """Reads every key starting with ``prefix``, sorted by key, in one snapshot."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        """Writes a key unconditionally; returns the new store revision.
        Raises :class:`LeaseNotFound` if ``lease`` does not exist.
        Not compare-and-swap: never use it to take ownership."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Deletes a key; returns whether it existed."""

    @abc.abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Deletes every key under ``prefix`` in one revision; returns the count."""

    @abc.abstractmethod
    async def txn(
        self,
        compare: Sequence[Compare],
        then: Sequence[TxnOp] = (),
        otherwise: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Atomic compare-and-swap: if every comparison holds, runs ``then``,
        else ``otherwise``. This is the only way to take ownership or
        leadership. On a timeout the outcome is unknown: callers re-read the
        key and decide again (the comparisons make a retry safe)."""

    @abc.abstractmethod
    async def revision(self) -> int:
        """The current store revision."""

    # -- leases

    @abc.abstractmethod
    async def grant(self, ttl: float, *, peers_expire: bool = False) -> Lease:
        """Creates a lease that expires ``ttl`` seconds from now unless kept alive.

        ``peers_expire``: the holder's peers call :meth:`expire_overdue` on it, so a
        backend whose own expiry is coarse (etcd looks every 500 ms) may grant a longer
        lease (``ttl`` + ``backstop``) and leave the exact expiry to them."""

    async def expire_overdue(self, lease_id: int, backstop: float) -> bool:
        """Revokes a lease granted with ``peers_expire`` once more than its ``ttl`` has
        passed since its last renewal, by the store's own clock; True when it did. A
        backend that expires leases on time itself has nothing to do."""
        return False

    @abc.abstractmethod
    async def keep_alive_once(self, lease_id: int) -> float:
        """Renews a lease to its full TTL; returns the TTL (with its backstop).
        Raises :class:`LeaseNotFound` when the lease has expired or was revoked."""

    @abc.abstractmethod
    async def revoke(self, lease_id: int) -> None:
        """Revokes a lease now, deleting its keys. Revoking a missing lease is a no-op."""

    @abc.abstractmethod
    async def time_to_live(self, lease_id: int) -> float | None:
        """Seconds left on a lease, or None when it does not exist."""

    # -- watches

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[Event]:
        """Streams events under ``prefix`` in revision order with no gaps.

        ``start_revision`` is inclusive; None means "changes after now". To
        resume, pass the last seen event's revision + 1. Raises
        :class:`Compacted` if that revision is gone, :class:`StoreUnavailable`
        if the store cannot be reached within the retry budget."""

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Discards history before ``revision``: watches from older revisions fail."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Releases connections and background tasks."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _b(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError("value must be bytes or str")


def to_bytes(value: bytes | str) -> bytes:
    """Values may be given as str (UTF-8) or bytes; stores keep bytes."""
    return _b(value)


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return ""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
