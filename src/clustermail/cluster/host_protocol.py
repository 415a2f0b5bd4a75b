"""The pipe protocol between a node agent and the resource host it spawns.

The agent starts one resource host per virtual server it owns::

    python -m clustermail.cluster.host_main --parent-pid <agent pid>

and talks to it over the host's stdin and stdout, one JSON object per line
(UTF-8, ``\\n``-terminated). Human logs go to the host's stderr, also as JSON
lines (``time, level, vs, node, resource, transition, message``).

Agent → host (stdin)
--------------------
Line 1 is the virtual server spec (:meth:`VirtualServerSpec.to_json`)::

    {"vs": "mail1", "node": "node1", "epoch": 7, "store": "sqlite:///…/cluster.db",
     "data_dir": "/abs/data",
     "resources": [{"name": "ip", "type": "ip_address", "properties": {…},
                    "depends_on": [], "policy": {…}}, …],
     "offline_resources": []}

then commands, executed one at a time in the order received:

* ``{"cmd": "offline"}`` — every resource offline in reverse dependency order,
  ``group offline`` event, exit 0.
* ``{"cmd": "resource_offline", "resource": X}`` — X's dependents go offline
  first, then X; X stays offline (admin intent) until ``resource_online``.
* ``{"cmd": "resource_online", "resource": X}`` — X's dependencies come online
  if needed, then X (its failure count is reset), then the dependents that
  went offline because of X.
* ``{"cmd": "lease", "safe_until": T}`` — the host's fence deadline, in
  ``time.monotonic()`` seconds (CLOCK_MONOTONIC is one clock for the whole
  machine): the agent's own lease deadline plus a grace (``host_grace``), sent on
  every renewal and on a schedule. If no later ``lease`` command arrives before ``T``, the host
  fences itself: a watchdog thread SIGKILLs every child and exits 4, even if
  the event loop is stuck. Without any ``lease`` command there is no deadline.
* ``{"cmd": "ping", "seq": N}`` — answered at once with ``{"event": "pong",
  "seq": N}`` from the host's event loop (not from the stdin thread), so an
  answer proves the loop runs. The agent pings every host on a schedule and
  kills one that stays silent past its virtual server's ``host_timeout``
  (a SIGSTOPped host, or a loop stuck in a blocking call, cannot answer).
* ``{"cmd": "update", "spec": {…}}`` — a new spec for the same vs/node/epoch/
  store: removed resources go offline, added ones come online, a resource
  whose type/properties/depends_on changed restarts (with its dependents);
  every other resource keeps running. ``offline_resources`` is replaced.

An unknown or malformed command gets an ``error`` event; the host keeps running.
**EOF on stdin means the agent is gone**: the host SIGKILLs the process group
of every child it started and exits 3. The host also asks the kernel for
SIGKILL when its parent dies (PR_SET_PDEATHSIG); that signal fires when the
parent *thread* that forked the host exits, so the agent must spawn hosts from
its main thread (asyncio's subprocess functions do: they fork in the loop's
thread, which is the main thread).

Host → agent (stdout)
---------------------
::

    {"event": "resource", "resource": "ip", "state": "online", "reason": "…",
     "time": 1700000000.0}                 # + "pid": N for process resources,
                                           # + "group_step": true (see below)
    {"event": "group", "state": "online", "reason": "…", "time": …}
    {"event": "log", "level": "warning", "message": "…", "resource": "ip", "time": …}
    {"event": "error", "message": "…", "time": …}
    {"event": "pong", "seq": N, "time": …}   # the answer to a ping
    {"event": "metrics", "text": "# HELP …", "time": …}

``metrics`` carries the host's own Prometheus registry (:mod:`clustermail.metrics`)
in the text format, every few seconds; the agent serves the latest, labelled with
the virtual server.

``state`` of a resource: online_pending, online, offline_pending, offline,
failed. A local restart reads: ``failed`` (why the check failed), then
``online_pending`` (reason ``restart 1 of 3 within 900 s``), then ``online``
with the new pid. ``group_step`` marks a change that is one routine step of
bringing the whole group online: the group event that follows says why, so
the agent logs the step without its reason. ``state`` of the group: online (every resource online),
partially_online (some are, e.g. after ``resource_offline``), offline, failed;
a group event is sent after the first bring-online and on each change.

The group is failed when a resource whose policy has ``affects_group`` fails
for good: it exceeded its restart threshold, its online or offline pending
timeout expired, or it cannot be brought online because of a permanent error
(bad properties, a fenced disk, a name held by a newer epoch); ordinary online
errors are retried under the restart policy. After ``group failed`` the host
takes the remaining resources offline and exits 1 by itself (an ``offline``
sent meanwhile is accepted silently); the agent gives the group up (failover)
once the host has exited. When the group fails while it is first being
brought online (a resource that never came online in this host, or a spec the
host cannot run), the failed group event also carries ``"start_failure":
"<resource>: <why>"`` — the same text for the same failure on every node, so
placement can tell a failure that follows the virtual server from node to node
from one that belongs to a node. A resource without ``affects_group`` just stays
failed, and the group partially online. ``log`` events repeat the warnings and
errors of the stderr log so the agent can surface them.

SIGTERM is taken as an ``offline`` command. SIGINT and SIGHUP are ignored: a
Ctrl-C or a closed terminal reaches the agent's whole process group, and the
agent, not the terminal, decides when its hosts stop.

Exit codes: 0 clean offline; 1 the group failed (or an offline step failed);
2 the spec was rejected at startup (``error`` event says why); 3 the agent is
gone (stdin EOF or stdout closed); 4 fenced (the lease deadline passed).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

_E = TypeVar("_E", bound=enum.StrEnum)

EXIT_OFFLINE: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_SPEC: Final = 2
EXIT_AGENT_GONE: Final = 3
EXIT_FENCED: Final = 4


class ProtocolError(ValueError):
    """A line that is not a valid message. The text says what is wrong."""


class SpecError(ProtocolError):
    """A virtual server spec that is not valid; names the key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ResourceState(enum.StrEnum):
    ONLINE_PENDING = "online_pending"
    ONLINE = "online"
    OFFLINE_PENDING = "offline_pending"
    OFFLINE = "offline"
    FAILED = "failed"


class GroupState(enum.StrEnum):
    ONLINE = "online"
    PARTIALLY_ONLINE = "partially_online"
    OFFLINE = "offline"
    FAILED = "failed"


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True, slots=True)
class Policy:
    """Monitoring and restart policy of one resource (seconds)."""

    quick_check_interval: float = 5.0
    thorough_check_interval: float = 60.0
    restart_threshold: int = 3
    restart_period: float = 900.0
    pending_timeout: float = 180.0
    affects_group: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "quick_check_interval": self.quick_check_interval,
            "thorough_check_interval": self.thorough_check_interval,
            "restart_threshold": self.restart_threshold,
            "restart_period": self.restart_period,
            "pending_timeout": self.pending_timeout,
            "affects_group": self.affects_group,
        }


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    type: str
    #: The resource's own properties (JSON values), validated by its type.
    properties: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    depends_on: tuple[str, ...] = ()
    policy: Policy = Policy()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "properties": _thaw(self.properties),
            "depends_on": list(self.depends_on),
            "policy": self.policy.to_json(),
        }

    def same_definition(self, other: ResourceSpec) -> bool:
        """Whether ``other`` runs the same thing (a policy change needs no restart)."""
        return (
            self.type == other.type
            and _thaw(self.properties) == _thaw(other.properties)
            and self.depends_on == other.depends_on
        )


@dataclass(frozen=True, slots=True)
class VirtualServerSpec:
    vs: str
    node: str
    epoch: int
    store: str
    data_dir: str
    resources: tuple[ResourceSpec, ...]
    offline_resources: tuple[str, ...] = ()

    def resource(self, name: str) -> ResourceSpec:
        for r in self.resources:
            if r.name == name:
                return r
        raise KeyError(name)

    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.resources)

    def to_json(self) -> dict[str, object]:
        return {
            "vs": self.vs,
            "node": self.node,
            "epoch": self.epoch,
            "store": self.store,
            "data_dir": self.data_dir,
            "resources": [r.to_json() for r in self.resources],
            "offline_resources": list(self.offline_resources),
        }


def parse_spec(obj: object, path: str = "spec") -> VirtualServerSpec:
    """Parses and validates a spec (already decoded from JSON).

    Checks shapes, types and names; the dependency graph itself (unknown
    dependencies, cycles) is checked by :mod:`clustermail.cluster.group`.
    """
    d = _obj(obj, path)
    _known_keys(
        d,
        path,
        {"vs", "node", "epoch", "store", "data_dir", "resources", "offline_resources"},
    )
    vs = _name(d.get("vs"), f"{path}.vs")
    node = _name(d.get("node"), f"{path}.node")
    epoch = _int(d.get("epoch"), f"{path}.epoch", minimum=0)
    store = _str(d.get("store"), f"{path}.store")
    data_dir = _str(d.get("data_dir"), f"{path}.data_dir")
    if not data_dir.startswith("/"):
        raise SpecError(f"{path}.data_dir", f"expected an absolute path, got {data_dir!r}")
    raw_resources = _list(d.get("resources"), f"{path}.resources")
    resources = tuple(
        _parse_resource(r, f"{path}.resources[{i}]") for i, r in enumerate(raw_resources)
    )
    seen: set[str] = set()
    for i, r in enumerate(resources):
        if r.name in seen:
            raise SpecError(f"{path}.resources[{i}].name", f"duplicate resource name {r.name!r}")
        seen.add(r.name)
    offline = _str_tuple(d.get("offline_resources", []), f"{path}.offline_resources")
    for i, name in enumerate(offline):
        if name not in seen:
            raise SpecError(f"{path}.offline_resources[{i}]", f"no resource named {name!r}")
    return VirtualServerSpec(vs, node, epoch, store, data_dir, resources, offline)


def _parse_resource(obj: object, path: str) -> ResourceSpec:
    d = _obj(obj, path)
    _known_keys(d, path, {"name", "type", "properties", "depends_on", "policy"})
    name = _name(d.get("name"), f"{path}.name")
    type_ = _name(d.get("type"), f"{path}.type")
    props = _obj(d.get("properties", {}), f"{path}.properties")
    depends_on = _str_tuple(d.get("depends_on", []), f"{path}.depends_on")
    policy = _parse_policy(d.get("policy", {}), f"{path}.policy")
    return ResourceSpec(name, type_, _freeze(props), depends_on, policy)


def _parse_policy(obj: object, path: str) -> Policy:
    d = _obj(obj, path)
    default = Policy()
    _known_keys(d, path, set(default.to_json()))

    def seconds(key: str, fallback: float) -> float:
        value = d.get(key, fallback)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{path}.{key}", f"expected a number of seconds, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise SpecError(f"{path}.{key}", f"expected a positive number, got {value!r}")
        return float(value)

    affects = d.get("affects_group", default.affects_group)
    if not isinstance(affects, bool):
        raise SpecError(f"{path}.affects_group", f"expected true or false, got {affects!r}")
    return Policy(
        quick_check_interval=seconds("quick_check_interval", default.quick_check_interval),
        thorough_check_interval=seconds(
            "thorough_check_interval", default.thorough_check_interval
        ),
        restart_threshold=_int(
            d.get("restart_threshold", default.restart_threshold),
            f"{path}.restart_threshold",
            minimum=0,
        ),
        restart_period=seconds("restart_period", default.restart_period),
        pending_timeout=seconds("pending_timeout", default.pending_timeout),
        affects_group=affects,
    )


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ResourceEvent:
    resource: str
    state: ResourceState
    reason: str
    time: float
    #: The service's process id, in ``online`` events of process resources.
    pid: int | None = None
    #: One routine step of bringing the whole group online (the reason adds nothing).
    group_step: bool = False


@dataclass(frozen=True, slots=True)
class GroupEvent:
    state: GroupState
    reason: str
    time: float
    #: In a failed group event: the start failure that failed it ("" if none).
    start_failure: str = ""


@dataclass(frozen=True, slots=True)
class LogEvent:
    level: str
    message: str
    time: float
    resource: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A command or spec was rejected; nothing changed because of it."""

    message: str
    time: float


@dataclass(frozen=True, slots=True)
class PongEvent:
    """The answer to a ping, written by the host's event loop."""

    seq: int
    time: float


@dataclass(frozen=True, slots=True)
class MetricsEvent:
    """The host's counters, in the Prometheus text format."""

    text: str
    time: float


HostEvent = ResourceEvent | GroupEvent | LogEvent | ErrorEvent | PongEvent | MetricsEvent


def encode_event(event: HostEvent) -> str:
    """One line (with its newline) for the host's stdout."""
    d: dict[str, object]
    if isinstance(event, ResourceEvent):
        d = {
            "event": "resource",
            "resource": event.resource,
            "state": event.state.value,
            "reason": event.reason,
            "time": event.time,
        }
        if event.pid is not None:
            d["pid"] = event.pid
        if event.group_step:
            d["group_step"] = True
    elif isinstance(event, GroupEvent):
        d = {"event": "group", "state": event.state.value, "reason": event.reason}
        if event.start_failure:
            d["start_failure"] = event.start_failure
        d["time"] = event.time
    elif isinstance(event, PongEvent):
        d = {"event": "pong", "seq": event.seq, "time": event.time}
    elif isinstance(event, LogEvent):
        d = {"event": "log", "level": event.level, "message": event.message}
        d["resource"] = event.resource
        d["time"] = event.time
    elif isinstance(event, MetricsEvent):
        d = {"event": "metrics", "text": event.text, "time": event.time}
    else:
        d = {"event": "error", "message": event.message, "time": event.time}
    return json.dumps(d, separators=(",", ":")) + "\n"


def decode_event(line: str | bytes) -> HostEvent:
    """Parses one line of the host's stdout (the agent's side)."""
    d = _obj(_load(line), "event")
    kind = d.get("event")
    t = _number(d.get("time", 0.0), "event.time")
    if kind == "resource":
        pid = d.get("pid")
        group_step = d.get("group_step", False)
        if not isinstance(group_step, bool):
            raise SpecError("event.group_step", f"expected true or false, got {group_step!r}")
        return ResourceEvent(
            resource=_str(d.get("resource"), "event.resource"),
            state=_enum(ResourceState, d.get("state"), "event.state"),
            reason=_str(d.get("reason", ""), "event.reason", empty=True),
            time=t,
            pid=None if pid is None else _int(pid, "event.pid", minimum=1),
            group_step=group_step,
        )
    if kind == "group":
        return GroupEvent(
            state=_enum(GroupState, d.get("state"), "event.state"),
            reason=_str(d.get("reason", ""), "event.reason", empty=True),
            time=t,
            start_failure=_str(d.get("start_failure", ""), "event.start_failure", empty=True),
        )
    if kind == "pong":
        return PongEvent(_int(d.get("seq"), "event.seq", minimum=0), t)
    if kind == "log":
        res = d.get("resource")
        return LogEvent(
            level=_str(d.get("level"), "event.level"),
            message=_str(d.get("message", ""), "event.message", empty=True),
            time=t,
            resource=None if res is None else _str(res, "event.resource"),
        )
    if kind == "error":
        return ErrorEvent(_str(d.get("message", ""), "event.message", empty=True), t)
    if kind == "metrics":
        return MetricsEvent(_str(d.get("text", ""), "event.text", empty=True), t)
    raise ProtocolError(f"unknown event {kind!r}")


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class OfflineCommand:
    pass


@dataclass(frozen=True, slots=True)
class ResourceOfflineCommand:
    resource: str


@dataclass(frozen=True, slots=True)
class ResourceOnlineCommand:
    resource: str


@dataclass(frozen=True, slots=True)
class UpdateCommand:
    spec: VirtualServerSpec


@dataclass(frozen=True, slots=True)
class LeaseCommand:
    #: CLOCK_MONOTONIC deadline (``time.monotonic()`` seconds).
    safe_until: float


@dataclass(frozen=True, slots=True)
class PingCommand:
    seq: int


Command = (
    OfflineCommand
    | ResourceOfflineCommand
    | ResourceOnlineCommand
    | UpdateCommand
    | LeaseCommand
    | PingCommand
)


def encode_command(command: Command) -> str:
    """One line (with its newline) for the host's stdin (the agent's side)."""
    d: dict[str, object]
    if isinstance(command, OfflineCommand):
        d = {"cmd": "offline"}
    elif isinstance(command, ResourceOfflineCommand):
        d = {"cmd": "resource_offline", "resource": command.resource}
    elif isinstance(command, ResourceOnlineCommand):
        d = {"cmd": "resource_online", "resource": command.resource}
    elif isinstance(command, LeaseCommand):
        d = {"cmd": "lease", "safe_until": command.safe_until}
    elif isinstance(command, PingCommand):
        d = {"cmd": "ping", "seq": command.seq}
    else:
        d = {"cmd": "update", "spec": command.spec.to_json()}
    return json.dumps(d, separators=(",", ":")) + "\n"


def encode_spec(spec: VirtualServerSpec) -> str:
    """The first line the agent writes to a new host's stdin."""
    return json.dumps(spec.to_json(), separators=(",", ":")) + "\n"


def decode_spec(line: str | bytes) -> VirtualServerSpec:
    return parse_spec(_load(line))


def decode_command(line: str | bytes) -> Command:
    """Parses one command line; raises :class:`ProtocolError` saying what is wrong."""
    d = _obj(_load(line), "command")
    cmd = d.get("cmd")
    if cmd == "offline":
        _known_keys(d, "command", {"cmd"})
        return OfflineCommand()
    if cmd in ("resource_offline", "resource_online"):
        _known_keys(d, "command", {"cmd", "resource"})
        name = _str(d.get("resource"), "command.resource")
        if cmd == "resource_offline":
            return ResourceOfflineCommand(name)
        return ResourceOnlineCommand(name)
    if cmd == "update":
        _known_keys(d, "command", {"cmd", "spec"})
        return UpdateCommand(parse_spec(d.get("spec"), "command.spec"))
    if cmd == "lease":
        _known_keys(d, "command", {"cmd", "safe_until"})
        until = _number(d.get("safe_until"), "command.safe_until")
        if not math.isfinite(until):
            raise SpecError("command.safe_until", f"expected a finite number, got {until!r}")
        return LeaseCommand(until)
    if cmd == "ping":
        _known_keys(d, "command", {"cmd", "seq"})
        return PingCommand(_int(d.get("seq"), "command.seq", minimum=0))
    known = "offline, resource_offline, resource_online, update, lease, ping"
    raise ProtocolError(f"unknown command {cmd!r} (expected one of: {known})")


# --------------------------------------------------------------------------- helpers


def _load(line: str | bytes) -> object:
    try:
        text = line.decode() if isinstance(line, bytes) else line
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"line is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"line is not JSON: {exc}") from exc


def _obj(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise SpecError(path, f"expected a JSON object, got {_kind(value)}")
    return value


def _list(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise SpecError(path, f"expected a JSON array, got {_kind(value)}")
    return value


def _str(value: object, path: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise SpecError(path, f"expected a non-empty string, got {value!r}")
    return value


def _name(value: object, path: str) -> str:
    text = _str(value, path)
    # Names end up in store keys and file names: keep them to a safe alphabet.
    if not all(c.isalnum() or c in "-_." for c in text) or text.startswith("."):
        raise SpecError(path, f"expected a name of letters, digits, '-', '_', '.', got {text!r}")
    return text


def _int(value: object, path: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(path, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _number(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(path, f"expected a number, got {value!r}")
    return float(value)


def _str_tuple(value: object, path: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _enum(cls: type[_E], value: object, path: str) -> _E:
    try:
        return cls(_str(value, path))
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise SpecError(path, f"expected one of {choices}, got {value!r}") from None


def _known_keys(d: Mapping[str, object], path: str, known: set[str]) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise SpecError(
            path, f"unknown key(s) {', '.join(unknown)} (expected: {', '.join(sorted(known))})"
        )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _freeze(value: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(json.loads(json.dumps(value)))


def _thaw(value: Mapping[str, object]) -> dict[str, object]:
    # JSON round trip: a deep copy made of plain dicts and lists.
    return dict(json.loads(json.dumps(dict(value))))
