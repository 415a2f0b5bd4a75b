"""Typed records of what the cluster keeps in the coordination store.

One frozen dataclass per kind of key under :data:`keys.PREFIX`. ``from_store``
parses a key's value and raises :class:`RecordError` naming the key when it
cannot; ``to_store`` gives the bytes to write. Code above the store reads and
writes these records, never raw JSON, so a renamed field is a type error
rather than a silent ``None``.

Fields a record does not know are kept in ``extra`` and written back: nodes of
two versions share one cluster during a rolling upgrade, and an older node
rewriting a record must not drop what a newer one added. A field that is
absent or ``null`` takes its default (and is left out when written); a known
field of the wrong type makes the record malformed. Mappings are left out of a
record's hash (``hash=False``), so records stay hashable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Self

from clustermail.cluster.config import config_from_dict
from clustermail.cluster.model import ClusterConfig


class RecordError(ValueError):
    """A value in the store that is not a valid record of its key's kind."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class StoreRecord(Protocol):
    """What every record here offers."""

    @classmethod
    def from_store(cls, key: str, value: bytes) -> Self:
        """Parses the value of ``key``; raises :class:`RecordError` naming the key."""
        ...

    def to_store(self) -> bytes:
        """The value to write."""
        ...


# --------------------------------------------------------------------------- reading and writing


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _load(key: str, value: bytes) -> object:
    try:
        loaded: object = json.loads(value)
    except ValueError as exc:  # also UnicodeDecodeError
        raise RecordError(key, f"not JSON ({exc})") from None
    return loaded


class _Fields:
    """The fields of one JSON object, read with types; remembers which were known."""

    def __init__(self, key: str, data: object, where: str = "") -> None:
        if not isinstance(data, dict):
            raise RecordError(key, f"{where}expected a JSON object, got {_describe(data)}")
        self.key = key
        self.where = where
        self.data: dict[str, object] = data
        self.known: set[str] = set()

    @classmethod
    def load(cls, key: str, value: bytes) -> _Fields:
        return cls(key, _load(key, value))

    def _raw(self, name: str) -> object:
        self.known.add(name)
        return self.data.get(name)

    def _wrong(self, name: str, expected: str, value: object) -> RecordError:
        return RecordError(self.key, f"{self.where}field {name!r}: expected {expected}, "
                                     f"got {_describe(value)}")

    def optional_text(self, name: str) -> str | None:
        value = self._raw(name)
        if value is None or isinstance(value, str):
            return value
        raise self._wrong(name, "a string", value)

    def text(self, name: str, default: str = "") -> str:
        value = self.optional_text(name)
        return default if value is None else value

    def required_text(self, name: str) -> str:
        value = self.optional_text(name)
        if not value:
            raise RecordError(self.key, f"{self.where}field {name!r} is missing")
        return value

    def optional_number(self, name: str) -> float | None:
        value = self._raw(name)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise self._wrong(name, "a number", value)

    def number(self, name: str, default: float = 0.0) -> float:
        value = self.optional_number(name)
        return default if value is None else value

    def required_number(self, name: str) -> float:
        value = self.optional_number(name)
        if value is None:
            raise RecordError(self.key, f"{self.where}field {name!r} is missing")
        return value

    def optional_integer(self, name: str) -> int | None:
        value = self._raw(name)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self._wrong(name, "an integer", value)

    def integer(self, name: str, default: int = 0) -> int:
        value = self.optional_integer(name)
        return default if value is None else value

    def required_integer(self, name: str) -> int:
        value = self.optional_integer(name)
        if value is None:
            raise RecordError(self.key, f"{self.where}field {name!r} is missing")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        raise self._wrong(name, "true or false", value)

    def text_map(self, name: str) -> dict[str, str]:
        value = self._raw(name)
        if value is None:
            return {}
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return dict(value)
        raise self._wrong(name, "an object of strings", value)

    def integer_map(self, name: str) -> dict[str, int]:
        value = self._raw(name)
        if value is None:
            return {}
        if isinstance(value, dict) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            return dict(value)
        raise self._wrong(name, "an object of integers", value)

    def extra(self) -> dict[str, object]:
        """The fields this version does not know, to be written back unchanged."""
        return {k: v for k, v in self.data.items() if k not in self.known}


def _object(known: Mapping[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    """Known fields over the unknown ones; null fields are left out."""
    out = {k: v for k, v in extra.items() if k not in known}
    out.update((k, v) for k, v in known.items() if v is not None)
    return out


def _dump(known: Mapping[str, object], extra: Mapping[str, object]) -> bytes:
    return json.dumps(_object(known, extra), sort_keys=True).encode()


# --------------------------------------------------------------------------- the records


#: Validated configurations by their stored bytes: views are read on every store
#: change and the configuration rarely changes. Keyed by the value rather than
#: the revision, so two stores in one process (tests) never share an entry.
_validated: dict[bytes, ClusterConfig] = {}


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """``config``: the applied cluster configuration, in its JSON (``to_dict``) form."""

    data: dict[str, Any] = field(hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> ConfigRecord:
        data = _load(key, value)
        if not isinstance(data, dict):
            raise RecordError(key, f"expected a JSON object, got {_describe(data)}")
        return cls(data)

    @classmethod
    def of(cls, config: ClusterConfig) -> ConfigRecord:
        return cls(config.to_dict())

    def to_store(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def parse(self) -> ClusterConfig:
        """Validates the document (once per distinct document); raises ``ConfigError``
        listing every problem."""
        raw = self.to_store()
        config = _validated.get(raw)
        if config is None:
            # A failure is not cached: it may pass once the process knows more
            # resource types.
            config = config_from_dict(self.data, "the applied configuration")
            if len(_validated) >= 4:
                _validated.clear()
            _validated[raw] = config
        return config


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """``nodes/<node>``: a node's registration, bound to its lease (present = up)."""

    pid: int = 0
    host: str = ""
    started: float = 0.0
    lease: int = 0
    #: The node is stopping: placement treats it as down and moves its virtual servers.
    draining: bool = False
    #: The lease's backstop (``coord.Lease.backstop``): when > 0, the leader's agent (or
    #: its deputy) revokes the lease once it is overdue, before the store would.
    backstop: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> NodeRecord:
        f = _Fields.load(key, value)
        return cls(pid=f.integer("pid"), host=f.text("host"), started=f.number("started"),
                   lease=f.integer("lease"), draining=f.boolean("draining"),
                   backstop=f.number("backstop"), extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"pid": self.pid, "host": self.host, "started": self.started,
                      "lease": self.lease, "draining": self.draining,
                      "backstop": self.backstop or None}, self.extra)


@dataclass(frozen=True, slots=True)
class NodeIntent:
    """``node-admin/<node>``: an administrator's intent for a node (persistent)."""

    paused: bool = False
    time: float | None = None
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> NodeIntent:
        f = _Fields.load(key, value)
        return cls(paused=f.boolean("paused"), time=f.optional_number("time"), extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"paused": self.paused, "time": self.time}, self.extra)


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """``leader``: the elected leader's node name (plain text), bound to its lease."""

    node: str

    @classmethod
    def from_store(cls, key: str, value: bytes) -> LeaderRecord:
        try:
            node = value.decode()
        except UnicodeDecodeError:
            raise RecordError(key, "not UTF-8 text") from None
        if not node.strip():
            raise RecordError(key, "empty: expected a node name")
        return cls(node)

    def to_store(self) -> bytes:
        return self.node.encode()


@dataclass(frozen=True, slots=True)
class AssignmentRecord:
    """``assign/<vs>``: the leader's decision for a virtual server (written by CAS)."""

    node: str | None = None  # None: placed nowhere
    #: Chosen by an administrator's move, which failback does not undo.
    manual: bool = False
    code: str = ""  # a placement ReasonCode value (a string: newer leaders may add codes)
    reason: str = ""
    #: Left failed (no node, or past its failover threshold), not merely offline.
    failed: bool = False
    time: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> AssignmentRecord:
        f = _Fields.load(key, value)
        return cls(node=f.optional_text("node"), manual=f.boolean("manual"), code=f.text("code"),
                   reason=f.text("reason"), failed=f.boolean("failed"), time=f.number("time"),
                   extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"node": self.node, "manual": self.manual, "code": self.code,
                      "reason": self.reason, "failed": self.failed, "time": self.time},
                     self.extra)

    def same_decision(self, other: AssignmentRecord) -> bool:
        """Equal but for the time it was made: rewriting it would change nothing."""
        return (self.node, self.manual, self.code, self.reason, self.failed) == (
            other.node, other.manual, other.code, other.reason, other.failed)


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """``owner/<vs>``: the one owner of a virtual server, bound to the owner's lease."""

    node: str
    epoch: int
    since: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> OwnerRecord:
        f = _Fields.load(key, value)
        return cls(node=f.required_text("node"), epoch=f.required_integer("epoch"),
                   since=f.number("since"), extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"node": self.node, "epoch": self.epoch, "since": self.since}, self.extra)


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """``epoch/<vs>``: the last fencing epoch handed out (a decimal integer)."""

    epoch: int = 0

    @classmethod
    def from_store(cls, key: str, value: bytes) -> EpochRecord:
        text = value.decode(errors="replace").strip()
        if not text:
            return cls(0)
        if not text.isdecimal():
            raise RecordError(key, f"expected a non-negative integer, got {text[:40]!r}")
        return cls(int(text))

    def to_store(self) -> bytes:
        return str(self.epoch).encode()


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """``status/<vs>``: what the owner observes, bound to the owner's lease."""

    node: str
    #: online, online_pending, partially_online, offline_pending, offline or failed.
    state: str = "online_pending"
    epoch: int = 0
    pid: int | None = None  # the resource host's, meaningful on the owner's machine only
    resources: Mapping[str, str] = field(default_factory=dict, hash=False)  # resource -> state
    resource_pids: Mapping[str, int] = field(default_factory=dict, hash=False)
    reason: str = ""
    since: float = 0.0
    #: With state failed: the start failure that failed it (see GiveUpRecord), or "".
    start_failure: str = ""
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> StatusRecord:
        f = _Fields.load(key, value)
        return cls(node=f.required_text("node"), state=f.text("state", "online_pending"),
                   epoch=f.integer("epoch"), pid=f.optional_integer("pid"),
                   resources=f.text_map("resources"), resource_pids=f.integer_map("resource_pids"),
                   reason=f.text("reason"), since=f.number("since"),
                   start_failure=f.text("start_failure"), extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"node": self.node, "state": self.state, "epoch": self.epoch,
                      "pid": self.pid, "resources": dict(self.resources),
                      "resource_pids": dict(self.resource_pids), "reason": self.reason,
                      "since": self.since, "start_failure": self.start_failure or None},
                     self.extra)


#: ``VsIntent.move_to`` of a move to whichever node placement accepts first.
ANY_NODE = "*"


@dataclass(frozen=True, slots=True)
class VsIntent:
    """``vs-admin/<vs>``: an administrator's intent for a virtual server (persistent).

    A move request carries a fresh ``move_id``; the leader answers it by writing
    the same id to ``move_done`` and why it refused (or "") to ``move_result``.
    """

    offline: bool = False
    time: float | None = None
    move_to: str | None = None  # a node, or ANY_NODE
    move_id: str | None = None
    move_time: float | None = None
    move_done: str | None = None
    move_result: str | None = None
    #: Failovers before this time no longer count against the threshold.
    cleared_at: float | None = None
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> VsIntent:
        f = _Fields.load(key, value)
        return cls(offline=f.boolean("offline"), time=f.optional_number("time"),
                   move_to=f.optional_text("move_to"), move_id=f.optional_text("move_id"),
                   move_time=f.optional_number("move_time"),
                   move_done=f.optional_text("move_done"),
                   move_result=f.optional_text("move_result"),
                   cleared_at=f.optional_number("cleared_at"), extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"offline": self.offline, "time": self.time, "move_to": self.move_to,
                      "move_id": self.move_id, "move_time": self.move_time,
                      "move_done": self.move_done, "move_result": self.move_result,
                      "cleared_at": self.cleared_at}, self.extra)

    @property
    def pending_move(self) -> str | None:
        """The target (a node or ANY_NODE) of a move the leader has not answered yet."""
        if self.move_id and self.move_done != self.move_id:
            return self.move_to or ANY_NODE
        return None

    def answered(self, refused: str) -> VsIntent:
        """The move answered: ``refused`` says why it was not done, "" when it was."""
        return replace(self, move_done=self.move_id, move_result=refused)

    def answer_to(self, move_id: str) -> str | None:
        """None while move ``move_id`` is unanswered; then why it was refused ("" if done)."""
        if self.move_done != move_id:
            return None
        return self.move_result or ""


@dataclass(frozen=True, slots=True)
class FailoverEntry:
    """One failover the leader reacted to: the node the virtual server failed on, and
    the start failure that failed it there ("" if it was not one)."""

    time: float
    node: str
    virtual_server: str = ""
    failure: str = ""
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, object]:
        return _object({"time": self.time, "node": self.node,
                        "virtual_server": self.virtual_server,
                        "failure": self.failure or None}, self.extra)


@dataclass(frozen=True, slots=True)
class FailoverHistory:
    """``failures/<vs>``: the failover history of a virtual server (a JSON array)."""

    entries: tuple[FailoverEntry, ...] = ()

    @classmethod
    def from_store(cls, key: str, value: bytes) -> FailoverHistory:
        data = _load(key, value)
        if not isinstance(data, list):
            raise RecordError(key, f"expected a JSON array, got {_describe(data)}")
        entries = []
        for i, item in enumerate(data):
            f = _Fields(key, item, f"entry {i}: ")
            entries.append(FailoverEntry(time=f.required_number("time"),
                                         node=f.required_text("node"),
                                         virtual_server=f.text("virtual_server"),
                                         failure=f.text("failure"),
                                         extra=f.extra()))
        return cls(tuple(entries))

    def to_store(self) -> bytes:
        return json.dumps([e.to_json() for e in self.entries], sort_keys=True).encode()

    def extended(self, new: list[FailoverEntry], now: float, keep_seconds: float,
                 keep_count: int) -> FailoverHistory:
        """``new`` appended to the entries younger than ``keep_seconds``, at most
        ``keep_count`` old ones kept (the newest)."""
        kept = [e for e in self.entries if now - e.time < keep_seconds]
        return FailoverHistory((*kept[max(0, len(kept) - keep_count):], *new))


@dataclass(frozen=True, slots=True)
class GiveUpRecord:
    """``giveup/<vs>``: the owner gave the virtual server up after it failed there.

    ``start_failure``: when the group failed while first coming online, what failed
    (``"<resource>: <why>"``, the same text on every node for the same failure)."""

    node: str
    time: float = 0.0
    reason: str = ""
    epoch: int = 0
    start_failure: str = ""
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> GiveUpRecord:
        f = _Fields.load(key, value)
        return cls(node=f.required_text("node"), time=f.number("time"), reason=f.text("reason"),
                   epoch=f.integer("epoch"), start_failure=f.text("start_failure"),
                   extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"node": self.node, "time": self.time, "reason": self.reason,
                      "epoch": self.epoch, "start_failure": self.start_failure or None},
                     self.extra)


@dataclass(frozen=True, slots=True)
class ResourceIntent:
    """``resource-admin/<vs>/<resource>``: an administrator holds a resource offline."""

    offline: bool = False
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> ResourceIntent:
        f = _Fields.load(key, value)
        return cls(offline=f.boolean("offline"), extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"offline": self.offline}, self.extra)


@dataclass(frozen=True, slots=True)
class NameRecord:
    """``names/<name>``: where a network name answers (the ``network_name`` resource).

    Persistent, so the name stays known while its virtual server moves; the
    epoch lets a newer owner win over a stale one.
    """

    name: str = ""
    address: str = ""
    node: str = ""
    vs: str = ""
    epoch: int = 0
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_store(cls, key: str, value: bytes) -> NameRecord:
        f = _Fields.load(key, value)
        return cls(name=f.text("name"), address=f.text("address"), node=f.text("node"),
                   vs=f.text("vs"), epoch=f.integer("epoch"), extra=f.extra())

    def to_store(self) -> bytes:
        return _dump({"name": self.name, "address": self.address, "node": self.node,
                      "vs": self.vs, "epoch": self.epoch}, self.extra)


__all__ = [
    "ANY_NODE",
    "AssignmentRecord",
    "ConfigRecord",
    "EpochRecord",
    "FailoverEntry",
    "FailoverHistory",
    "GiveUpRecord",
    "LeaderRecord",
    "NameRecord",
    "NodeIntent",
    "NodeRecord",
    "OwnerRecord",
    "RecordError",
    "ResourceIntent",
    "StatusRecord",
    "StoreRecord",
    "VsIntent",
]
