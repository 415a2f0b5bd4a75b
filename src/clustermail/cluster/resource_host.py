"""The resource host's group state machine (Windows' RHS): one virtual server's resources.

It brings the virtual server's resources online in dependency order, watches
them with quick and thorough checks, restarts them per policy, and obeys the
agent's commands; :mod:`clustermail.cluster.host_protocol` documents the pipe
protocol and the exit codes. The process around it (stdin, the lease
watchdog's deadlines, the parent-death signal, ``main``) is
:mod:`clustermail.cluster.host_main`; this class needs only an event sink, a
log and a stream of command lines, so it runs in a test's event loop too.

Every transition (bring the group online, recover a resource, a command) runs
under one lock, one at a time, so the resources' states only change in one
place; the checks run concurrently and queue a recovery when they fail.

Every resource operation (online, offline, terminate, checks) runs as a task of
its own under its pending timeout, enforced from outside it: an operation that
hangs (awaits forever) or ignores its cancellation is given up at the timeout
and counts as failed. What no timeout inside the loop can catch, a loop stuck
in a blocking call, the agent catches: it pings the host, and a host that does
not answer within its ``host_timeout`` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clustermail.cluster import procutil, resource_types, undo
from clustermail.cluster.group import DependencyGraph, GroupError, RestartWindow, group_state
from clustermail.cluster.host_output import EventSink, HostLog, transition
from clustermail.cluster.host_protocol import (
    EXIT_AGENT_GONE,
    EXIT_BAD_SPEC,
    EXIT_FAILED,
    EXIT_FENCED,
    EXIT_OFFLINE,
    Command,
    ErrorEvent,
    GroupEvent,
    GroupState,
    LeaseCommand,
    OfflineCommand,
    PingCommand,
    PongEvent,
    ProtocolError,
    ResourceEvent,
    ResourceOfflineCommand,
    ResourceOnlineCommand,
    ResourceSpec,
    ResourceState,
    VirtualServerSpec,
    decode_command,
)
from clustermail.cluster.resource_types import ResourceTypeError
from clustermail.cluster.resources.base import (
    Properties,
    Resource,
    ResourceContext,
    ResourceError,
    StoreHandle,
)

#: Bound on closing the store at exit.
CLOSE_TIMEOUT = 5.0

_transition_ids = itertools.count(1)

T = TypeVar("T")

#: Pause between a resource's failure and its restart (Windows clustering's
#: "restart delay", 500 ms): a resource that fails at once must not spin.
RESTART_DELAY = 0.5
#: How long an operation past its pending timeout has to end once cancelled;
#: one that ignores the cancellation is abandoned.
CANCEL_GRACE = 1.0


# --------------------------------------------------------------------------- state


@dataclass(eq=False)
class Slot:
    """One resource of the group and what the host knows about it."""

    spec: ResourceSpec
    resource: Resource
    restarts: RestartWindow
    state: ResourceState = ResourceState.OFFLINE
    #: Bumped each time it comes online, so a stale check cannot restart a newer run.
    generation: int = 0
    monitor: asyncio.Task[None] | None = None
    last_reason: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    reason: str = ""
    #: Not worth a restart (bad configuration, fenced disk, pending timeout).
    final: bool = False


@dataclass
class _Build:
    graph: DependencyGraph
    slots: dict[str, Slot] = field(default_factory=dict)


class ResourceHost:
    """Runs one virtual server's resources. See the module docstring."""

    def __init__(
        self,
        spec: VirtualServerSpec,
        sink: EventSink,
        log: HostLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.sink = sink
        self.log = log
        self.clock = clock
        self.store = StoreHandle(spec.store)
        self.graph = DependencyGraph([])
        self.slots: dict[str, Slot] = {}
        self.wanted_offline: set[str] = set(spec.offline_resources)
        self.group_failed: str | None = None
        self.reported: GroupState | None = None
        self.closing = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.watchdog = procutil.DeadlineWatchdog(self._fence)
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    # ---------------------------------------------------------------- group view

    def resource(self, name: str) -> Resource:
        return self.slots[name].resource

    def type_of(self, name: str) -> str:
        return self.slots[name].spec.type

    def names(self) -> tuple[str, ...]:
        return self.graph.names

    def dependencies_of(self, name: str) -> tuple[str, ...]:
        return self.graph.dependencies(name)

    # ---------------------------------------------------------------- building

    def build(self, spec: VirtualServerSpec, names: set[str] | None = None) -> _Build:
        """Checks a spec and builds the resources ``names`` (default: all)
        without touching running ones. Raises a clear error if it is not usable."""
        built = _Build(DependencyGraph.from_spec(spec))
        for r in spec.resources:
            cls = resource_types.get(r.type).resource
            if names is not None and r.name not in names:
                continue
            ctx = ResourceContext(
                vs=spec.vs,
                node=spec.node,
                epoch=spec.epoch,
                data_dir=Path(spec.data_dir),
                store_url=spec.store,
                resource=r.name,
                type_name=r.type,
                log=self.log.bind(r.name),
                _store=self.store,
                _group=self,
            )
            resource = cls(ctx, Properties(r.properties, f"{r.name} ({r.type})"))
            window = RestartWindow(r.policy.restart_threshold, r.policy.restart_period)
            built.slots[r.name] = Slot(r, resource, window)
        return built

    # ---------------------------------------------------------------- running

    async def run(self, commands: asyncio.StreamReader) -> int:
        """Brings the group online, serves commands until done; the exit code."""
        try:
            built = self.build(self.spec)
        except Exception as exc:  # any error of a type's constructor is a bad spec
            return reject(self.sink, self.log, f"spec rejected: {_describe(exc)}")
        self.graph, self.slots = built.graph, built.slots
        self.log.write(
            "info",
            f"resource host started (pid {os.getpid()})",
            None,
            {"epoch": self.spec.epoch, "resources": self.graph.online_order()},
        )
        reader = asyncio.create_task(self._read_commands(commands))
        self._spawn("start", self._start)
        try:
            code = await self.done
            if code == EXIT_AGENT_GONE:
                return code
            for slot in self.slots.values():
                self._stop_monitor(slot)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            procutil.kill_all_groups()  # nothing may outlive the host
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.store.close()
            self.watchdog.stop()  # only now: the children are gone
            return code
        finally:
            # Only now: until the very end the host answers the agent's pings, so a
            # slow clean-up is not taken for a hang.
            reader.cancel()

    def _fence(self) -> None:
        """The lease deadline passed (watchdog thread): kill everything, exit now."""
        procutil.kill_all_groups()
        self.log.write(
            "error",
            "fenced: the agent's lease deadline passed without renewal; killed every child",
            None,
            to_agent=False,  # stdout belongs to the loop thread
        )
        self.revert_changes()
        os._exit(EXIT_FENCED)

    def revert_changes(self) -> None:
        """Reverts what the resources left on the machine (an interface address), now,
        from whichever thread or signal handler: the agent is gone or about to give the
        group away."""
        for u in undo.run_pending(Path(self.spec.data_dir), self.spec.node, self.spec.vs):
            # From a signal handler the main thread may be mid-write on stderr: a
            # reentrant write raises, and the log line is worth less than the exit.
            with contextlib.suppress(Exception):
                if u.error is None:
                    self.log.write("warning", f"removed {u.what}", u.resource, to_agent=False)
                else:
                    self.log.write("error", f"cannot remove {u.what}: {u.error}", u.resource,
                                   to_agent=False)

    def agent_gone(self, why: str) -> None:
        """The agent died: SIGKILL every child now, synchronously, and stop."""
        procutil.kill_all_groups()
        self.revert_changes()
        self.closing = True
        self.log.write("error", f"the node agent is gone ({why}): killed every child", None)
        if not self.done.done():
            self.done.set_result(EXIT_AGENT_GONE)

    def _finish(self, code: int) -> None:
        self.closing = True
        if not self.done.done():
            self.done.set_result(code)

    def _spawn(self, what: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Runs a transition as a task, after the ones queued before it."""

        async def body() -> None:
            transition.set(f"t{next(_transition_ids)}")
            try:
                async with self._lock:
                    if self.closing and what != "offline":
                        return
                    await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the host: say it and go on
                self.log.write("error", f"{what}: unexpected {type(exc).__name__}: {exc}", None)
                self.sink.emit(ErrorEvent(f"{what}: internal error: {exc}", time.time()))

        task: asyncio.Task[None] = asyncio.create_task(body(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_commands(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError) as exc:
                self._error(f"command line rejected: {exc}")
                continue
            if not line:
                self.agent_gone("stdin closed")
                return
            if not line.strip():
                continue
            try:
                command = decode_command(line)
            except ProtocolError as exc:
                preview = line[:200].decode(errors="replace").strip()
                self._error(f"command rejected: {exc} (line: {preview!r})")
                continue
            self.dispatch(command)

    def _error(self, message: str) -> None:
        self.log.write("warning", message, None, to_agent=False)  # the error event says it
        self.sink.emit(ErrorEvent(message, time.time()))

    def dispatch(self, command: Command) -> None:
        """Acts on one agent command: at once for ``lease``, else queued."""
        if isinstance(command, LeaseCommand):
            # At once, not queued behind a transition: the deadline is about now.
            self.watchdog.set_deadline(command.safe_until)
            return
        if isinstance(command, PingCommand):
            # From the loop, so the answer proves the loop runs (even while stopping).
            self.sink.emit(PongEvent(command.seq, time.time()))
            return
        if self.closing:
            if isinstance(command, OfflineCommand):
                self.log.write("info", "offline: already going offline", None)
            else:
                self._error(f"{type(command).__name__} ignored: the host is stopping")
            return
        if isinstance(command, OfflineCommand):
            self.closing = True
            self._spawn("offline", self._offline_all)
        elif isinstance(command, ResourceOfflineCommand | ResourceOnlineCommand):
            if command.resource not in self.slots:
                self._error(f"no resource named {command.resource!r} in {self.spec.vs}")
                return
            name = command.resource
            if isinstance(command, ResourceOfflineCommand):
                self._spawn("resource_offline", lambda: self._resource_offline(name))
            else:
                self._spawn("resource_online", lambda: self._resource_online(name))
        else:
            spec = command.spec
            self._spawn("update", lambda: self._update(spec))

    # ---------------------------------------------------------------- events

    def _set(
        self, slot: Slot, state: ResourceState, reason: str, group_step: bool = False
    ) -> None:
        slot.state, slot.last_reason = state, reason
        pid = slot.resource.pid if state is ResourceState.ONLINE else None
        level = "error" if state is ResourceState.FAILED else "info"
        text = f"{state.value}: {reason}" if reason else state.value
        self.log.write(level, text, slot.spec.name, to_agent=False)  # the event says it
        self.sink.emit(
            ResourceEvent(slot.spec.name, state, reason, time.time(), pid, group_step)
        )

    def _report_group(self, force: bool = False) -> None:
        if self.group_failed is not None:
            return
        states = {name: self.slots[name].state for name in self.graph.names}
        state = group_state(states)
        if state is self.reported and not force:
            return
        self.reported = state
        not_online = [
            f"{n} ({self.slots[n].state.value})"
            for n in self.graph.online_order()
            if self.slots[n].state is not ResourceState.ONLINE
        ]
        if state is GroupState.ONLINE:
            reason = f"all {len(states)} resources online"
        elif state is GroupState.OFFLINE:
            reason = "no resource online" + (f": {', '.join(not_online)}" if not_online else "")
        else:
            reason = "not online: " + ", ".join(not_online)
        self.log.write("info", f"group {state.value}: {reason}", None)
        self.sink.emit(GroupEvent(state, reason, time.time()))

    # ---------------------------------------------------------------- primitives

    async def _online_once(self, slot: Slot, reason: str, group_step: bool) -> Outcome:
        self._set(slot, ResourceState.ONLINE_PENDING, reason, group_step)
        timeout = slot.spec.policy.pending_timeout
        try:
            await _within(slot.resource.online(), timeout)
        except _Expired:
            outcome = Outcome(False, f"online pending timeout ({timeout:g} s) expired", True)
        except ResourceError as exc:
            outcome = Outcome(False, str(exc), exc.permanent)
        except Exception as exc:
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        else:
            slot.generation += 1
            self._set(slot, ResourceState.ONLINE, reason, group_step)
            slot.monitor = asyncio.create_task(self._monitor(slot, slot.generation))
            return Outcome(True)
        await self._terminate(slot)
        return outcome

    async def _terminate(self, slot: Slot) -> None:
        self._stop_monitor(slot)
        timeout = slot.spec.policy.pending_timeout
        try:
            await _within(slot.resource.terminate(), timeout)
        except _Expired:
            self.log.write("error", f"terminate gave no answer within {timeout:g} s",
                           slot.spec.name)
        except Exception as exc:
            self.log.write("error", f"terminate failed: {type(exc).__name__}: {exc}",
                           slot.spec.name)

    def _stop_monitor(self, slot: Slot) -> None:
        if slot.monitor is not None and slot.monitor is not asyncio.current_task():
            slot.monitor.cancel()
        slot.monitor = None

    async def _bring_online(self, slot: Slot, reason: str, group_step: bool = False) -> bool:
        """Online with the restart policy; False if it failed for good. ``group_step``:
        one step of bringing the whole group online (its restarts are not)."""
        while True:
            outcome = await self._online_once(slot, reason, group_step)
            if outcome.ok:
                return True
            decision = slot.restarts.record_failure(self.clock())
            if outcome.final or not decision.restart:
                why = outcome.reason if outcome.final else f"{outcome.reason}; {decision.reason}"
                # While the group is first coming online, a resource that never came
                # online here: the same failure on every node is one failure of the
                # group (placement compares this text, so it leaves out the counts).
                starting = self.reported is None and slot.generation == 0
                await self._failed_for_good(
                    slot, why, start_failure=_signature(slot.spec.name, outcome.reason)
                    if starting else "")
                return False
            self._set(slot, ResourceState.FAILED, outcome.reason)
            reason, group_step = decision.reason, False
            await asyncio.sleep(RESTART_DELAY)

    async def _take_offline(self, slot: Slot, reason: str) -> bool:
        """Offline within the pending timeout; False if it had to be terminated."""
        self._stop_monitor(slot)
        if slot.state in (ResourceState.OFFLINE, ResourceState.FAILED):
            if slot.state is ResourceState.FAILED:
                self._set(slot, ResourceState.OFFLINE, reason)
            return True
        self._set(slot, ResourceState.OFFLINE_PENDING, reason)
        timeout = slot.spec.policy.pending_timeout
        try:
            await _within(slot.resource.offline(), timeout)
        except _Expired:
            why = f"offline pending timeout ({timeout:g} s) expired: terminated"
        except Exception as exc:
            why = f"offline failed ({type(exc).__name__}: {exc}): terminated"
        else:
            self._set(slot, ResourceState.OFFLINE, reason)
            return True
        await self._terminate(slot)
        self._set(slot, ResourceState.FAILED, why)
        return False

    async def _failed_for_good(self, slot: Slot, why: str, start_failure: str = "") -> None:
        self._set(slot, ResourceState.FAILED, why)
        if slot.spec.policy.affects_group:
            await self._fail_group(f"resource {slot.spec.name} failed: {why}", start_failure)

    async def _fail_group(self, reason: str, start_failure: str = "") -> None:
        """The group must move: report, take the rest offline, exit non-zero."""
        if self.group_failed is not None:
            return
        self.group_failed = reason
        self.closing = True
        self.log.write("error", f"group failed: {reason}", None)
        self.sink.emit(GroupEvent(GroupState.FAILED, reason, time.time(), start_failure))
        for name in self.graph.offline_order():
            slot = self.slots[name]
            if slot.state is not ResourceState.FAILED:
                await self._take_offline(slot, "the group failed")
        self._finish(EXIT_FAILED)

    async def _converge(self, reason: str, group_step: bool = False) -> None:
        """Brings online, in order, every wanted resource whose dependencies are online."""
        for name in self.graph.online_order():
            if self.group_failed is not None:
                return
            slot = self.slots[name]
            deps_online = all(
                self.slots[d].state is ResourceState.ONLINE for d in self.graph.dependencies(name)
            )
            if (
                slot.state is ResourceState.OFFLINE
                and name not in self.wanted_offline
                and deps_online
            ):
                await self._bring_online(slot, reason, group_step)

    async def _offline_with_dependents(self, names: set[str], reason: str) -> bool:
        """``names`` and everything depending on them offline, dependents first."""
        targets = names | self.graph.all_dependents(names)
        clean = True
        for name in self.graph.offline_order():
            if name in targets:
                slot = self.slots[name]
                why = reason if name in names else f"{reason} (depends on it)"
                if not await self._take_offline(slot, why):
                    clean = False
                    if slot.spec.policy.affects_group:
                        await self._fail_group(f"resource {name}: {slot.last_reason}")
                        return False
        return clean

    # ---------------------------------------------------------------- monitoring

    async def _monitor(self, slot: Slot, generation: int) -> None:
        why = await self._watch(slot)
        self._spawn("recover", lambda: self._recover(slot, generation, why))

    async def _watch(self, slot: Slot) -> str:
        """Runs the quick and thorough checks on schedule; returns why one failed."""
        policy = slot.spec.policy
        now = self.clock()
        next_quick = now + policy.quick_check_interval
        next_thorough = now + policy.thorough_check_interval
        while True:
            await asyncio.sleep(max(0.0, min(next_quick, next_thorough) - self.clock()))
            thorough = self.clock() >= next_thorough
            kind = "thorough check" if thorough else "quick check"
            check = slot.resource.thorough_check if thorough else slot.resource.quick_check
            try:
                if not await _within(check(), policy.pending_timeout):
                    return f"{kind} failed"
            except _Expired:
                return f"{kind} gave no answer within {policy.pending_timeout:g} s"
            except Exception as exc:
                return f"{kind} failed: {type(exc).__name__}: {exc}"
            policy = slot.spec.policy  # an update may have changed the intervals
            now = self.clock()
            next_quick = now + policy.quick_check_interval
            if thorough:
                next_thorough = now + policy.thorough_check_interval

    async def _recover(self, slot: Slot, generation: int, why: str) -> None:
        name = slot.spec.name
        if self.slots.get(name) is not slot or slot.generation != generation:
            return  # replaced or restarted meanwhile
        if slot.state is not ResourceState.ONLINE:
            return
        dependents = self.graph.all_dependents({name})
        await self._offline_with_dependents(dependents, f"{name} failed")
        if self.group_failed is not None:
            return
        await self._terminate(slot)
        decision = slot.restarts.record_failure(self.clock())
        if not decision.restart:
            await self._failed_for_good(slot, f"{why}; {decision.reason}")
        else:
            self._set(slot, ResourceState.FAILED, why)
            await asyncio.sleep(RESTART_DELAY)
            await self._bring_online(slot, decision.reason)
        await self._converge(f"{name} is back")
        self._report_group()

    # ---------------------------------------------------------------- commands

    async def _start(self) -> None:
        await self._converge("bringing the group online", group_step=True)
        self._report_group(force=True)

    async def _offline_all(self) -> None:
        clean = True
        for name in self.graph.offline_order():
            if not await self._take_offline(self.slots[name], "the group is going offline"):
                clean = False
        reason = "all resources offline" if clean else "offline; some resources had to be killed"
        self.log.write("info", f"group offline: {reason}", None)
        self.sink.emit(GroupEvent(GroupState.OFFLINE, reason, time.time()))
        self._finish(EXIT_OFFLINE if clean else EXIT_FAILED)

    async def _resource_offline(self, name: str) -> None:
        self.wanted_offline.add(name)
        await self._offline_with_dependents({name}, "taken offline by the agent")
        self._report_group()

    async def _resource_online(self, name: str) -> None:
        needed = {name} | self.graph.all_dependencies({name})
        self.wanted_offline -= needed
        for n in needed:
            slot = self.slots[n]
            slot.restarts.reset()  # an operator's "bring online" forgives past failures
            if slot.state is ResourceState.FAILED:
                self._set(slot, ResourceState.OFFLINE, "reset by the agent")
        await self._converge(f"{name} brought online by the agent")
        self._report_group()

    async def _update(self, new: VirtualServerSpec) -> None:
        old = self.spec
        fixed = ("vs", "node", "epoch", "store", "data_dir")
        changed_ids = [f for f in fixed if getattr(old, f) != getattr(new, f)]
        if changed_ids:
            self._error(
                f"update rejected: it cannot change {', '.join(changed_ids)}; "
                "start a new resource host for that"
            )
            return
        before = {r.name: r for r in old.resources}
        after = {r.name: r for r in new.resources}
        removed = set(before) - set(after)
        added = set(after) - set(before)
        redefined = {n for n in set(before) & set(after) if not before[n].same_definition(after[n])}
        try:
            built = self.build(new, added | redefined)
        except Exception as exc:
            self._error(f"update rejected: {_describe(exc)}")
            return
        changes = {"added": sorted(added), "removed": sorted(removed)}
        self.log.write("info", "update", None, changes | {"redefined": sorted(redefined)})
        stopping = removed | redefined | (set(new.offline_resources) & set(before))
        await self._offline_with_dependents(stopping, "removed or changed by an update")
        if self.group_failed is not None:
            return
        for name in removed:
            del self.slots[name]
        for name, slot in built.slots.items():
            self.slots[name] = slot
        for name in set(before) & set(after) - redefined:
            slot = self.slots[name]
            if slot.spec.policy != after[name].policy:
                p = after[name].policy
                slot.restarts = RestartWindow(p.restart_threshold, p.restart_period)
            slot.spec = after[name]
        self.spec, self.graph = new, built.graph
        self.wanted_offline = set(new.offline_resources)
        await self._converge("added or changed by an update")
        self._report_group()


class _Expired(Exception):
    """A pending timeout expired (not a TimeoutError raised inside a resource)."""


#: Operations that ignored their cancellation, kept referenced until they end.
_abandoned: set[asyncio.Future[Any]] = set()


async def _within(aw: Awaitable[T], seconds: float) -> T:
    """``aw``'s result, or :class:`_Expired` after ``seconds``. The operation runs as
    a task of its own and the timeout is kept from outside it: an operation that
    swallows its cancellation is abandoned, not waited for."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if task in done:
        if not task.cancelled():
            task.exception()  # retrieved: what it raised while cancelled is moot
    else:
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)
    raise _Expired()


def _signature(resource: str, reason: str) -> str:
    """``resource: reason``, once (a resource's own errors often start with its name)."""
    return reason if reason.startswith(f"{resource}:") else f"{resource}: {reason}"


_CLEAR_ERRORS = (ProtocolError, GroupError, ResourceTypeError, ResourceError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, _CLEAR_ERRORS):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def reject(sink: EventSink, log: HostLog, message: str) -> int:
    """Reports a spec that cannot run (the group fails at once); the exit code."""
    log.write("error", message, None, to_agent=False)
    sink.emit(ErrorEvent(message, time.time()))
    # A spec that cannot run here (an unknown type) cannot run anywhere else either.
    sink.emit(GroupEvent(GroupState.FAILED, message, time.time(), start_failure=message))
    return EXIT_BAD_SPEC
