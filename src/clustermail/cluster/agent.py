"""The node agent: one per node (`clustermail node run`).

It keeps its node lease alive, takes part in leader election, and reconciles
what the leader assigned to it: it takes a virtual server's ownership key
(bound to its own lease) and bumps the fencing epoch in one compare-and-swap,
then runs the virtual server's resources in a resource host child process.

Self-fencing: the lease keeper's deadline timer kills every resource host
(SIGKILL) the moment the lease cannot be shown alive any more, before the
store can expire it and let another node take over. The resource hosts also
fence themselves: the agent sends them the lease deadline (plus a short grace:
the agent kills them itself at its own), and a host that is not told of a later
one (its agent is frozen or dead) kills its services.

Supervision: the agent pings every resource host each ``renew_interval`` and
kills one that stays silent past its virtual server's ``host_timeout`` or that
does not finish going offline within its resources' pending timeouts
(:mod:`clustermail.cluster.supervision`); the virtual server then fails over
like one whose resources failed. A stop (SIGTERM, SIGINT, SIGHUP) therefore
always finishes; a second signal kills the hosts at once. Ownership of a
virtual server is released only once its host has been reaped.

Each cycle reads one view of the store, decides from it only, and logs one
reason line when its conclusion changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clustermail.cluster import eventlog, keys, node_requests, undo
from clustermail.cluster.config import ConfigError
from clustermail.cluster.host_pool import HostPool, HostProcess
from clustermail.cluster.host_protocol import (
    GroupEvent,
    GroupState,
    HostEvent,
    LeaseCommand,
    MetricsEvent,
    OfflineCommand,
    PingCommand,
    ResourceEvent,
    ResourceOfflineCommand,
    ResourceOnlineCommand,
    UpdateCommand,
    parse_spec,
)
from clustermail.cluster.hostspec import host_spec
from clustermail.cluster.leader import Leader
from clustermail.cluster.metrics import HostedGroup, NodeCounters, NodeState
from clustermail.cluster.metrics import serve as serve_metrics
from clustermail.cluster.model import DEFAULT_HOST_TIMEOUT
from clustermail.cluster.peer_expiry import Watched, expire_overdue_peers, watched_leases
from clustermail.cluster.records import (
    EpochRecord,
    GiveUpRecord,
    LeaderRecord,
    NodeRecord,
    OwnerRecord,
    RecordError,
    StatusRecord,
)
from clustermail.cluster.sd_notify import Notifier
from clustermail.cluster.supervision import KILL_GRACE, offline_budget
from clustermail.cluster.timing import LeaseTiming, lease_raised
from clustermail.cluster.view import ClusterView, read_view
from clustermail.coord import Compare, CoordError, Delete, InvalidStoreURL, Put, Store, open_store
from clustermail.coord.lease import LeaseKeeper
from clustermail.coord.url import parse_store_url
from clustermail.logutil import log_event
from clustermail.private_files import UnsafePathError, check_data_dir, restrict_umask


@dataclass
class LocalVS:
    """A virtual server whose resource host runs on this node."""

    name: str
    epoch: int
    assign_revision: int
    proc: HostProcess
    spec: dict[str, Any] = field(default_factory=dict)
    config_revision: int = 0
    state: str = "online_pending"
    reason: str = "starting"
    resources: dict[str, str] = field(default_factory=dict)
    resource_pids: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    stopping: bool = False
    failed: bool = False
    released: bool = False
    reader: asyncio.Task[None] | None = None
    offline_resources: set[str] = field(default_factory=set)
    #: The start failure the host reported with its failed group ("" if none).
    start_failure: str = ""
    #: Being killed by the agent (hung, or past its offline budget).
    killing: bool = False
    #: No group state reported yet: the host is still bringing the group online.
    starting: bool = True
    #: The resource host's last metrics report (Prometheus text).
    metrics: str = ""


class NodeAgent:
    def __init__(self, store_url: str, name: str, data_dir: Path,
                 request_handlers: Mapping[str, node_requests.Handler] | None = None) -> None:
        self.store_url = store_url
        #: What this agent answers of the requests addressed to its node (none: no worker).
        self.request_handlers = dict(request_handlers or {})
        self.name = name
        self.data_dir = data_dir
        self.store: Store | None = None
        self.keeper: LeaseKeeper | None = None
        self.timing: LeaseTiming | None = None
        self.local: dict[str, LocalVS] = {}
        #: vs -> assignment revision we gave up on (don't retry until reassigned)
        self.given_up: dict[str, int] = {}
        #: Virtual servers let go at a stop with their undo records still failing.
        self._unreverted: set[str] = set()
        self.leader = Leader(name)
        self.wake = asyncio.Event()
        self.stopping = False
        self.draining = False
        self.last_reason = ""
        self._tasks: list[asyncio.Task[Any]] = []
        self._config_rev = 0
        #: Longest pause between two attempts to rejoin after the lease was lost.
        self.rejoin_max_delay = REJOIN_MAX_DELAY
        #: Failed attempts to rejoin since the node started.
        self.rejoin_failures = 0
        self.hosts = HostPool(data_dir, name, keep_spare=lambda: not self.stopping,
                              store_scheme=_scheme_of(store_url))
        self._log_queue: asyncio.Queue[eventlog.LogEntry] = asyncio.Queue()
        #: Kills of hung hosts under way (referenced so they are not collected).
        self._kills: set[asyncio.Task[None]] = set()
        #: Hosts a fence killed that have not been seen to exit, by virtual server: none
        #: of these is started here again before (a new incarnation may be assigned it
        #: at once, and a SIGKILLed process takes a while to be gone).
        self._fenced_hosts: dict[str, HostProcess] = {}
        self.counters = NodeCounters()
        #: The nodes whose leases this agent asks about (``peer_expiry``), as of the last
        #: cycle.
        self._watched: list[Watched] = []
        self._metrics_server: asyncio.Server | None = None
        #: systemd's notification socket (`node run` under Type=notify), if any.
        self.notifier = Notifier()
        #: When the supervision loop last went round (the watchdog pings only while it does).
        self._supervised_at = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        self._check_data_dir()
        self.store = await open_store(self.store_url)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._log_writer(), name="log"))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._request_stop, sig)
        try:
            self.notifier.status("waiting for the cluster configuration")
            view = await self._wait_for_config()
            if view is None:
                return 0
            self.timing = view.applied_config().timing
            # Before we may own anything: what resource hosts of an earlier run left.
            self._report_undone(await asyncio.to_thread(undo.run_pending, self.data_dir,
                                                        self.name))
            await self._register()
            self.hosts.refill()
            await self._serve_metrics(view)
            self._tasks.append(loop.create_task(self._watch_loop(), name="watch"))
            self._tasks.append(loop.create_task(self._deadline_feeder(), name="deadline"))
            self._tasks.append(loop.create_task(self._supervise(), name="supervise"))
            self._tasks.append(loop.create_task(expire_overdue_peers(
                self.store, lambda: self._watched, self.timing.peer_check_interval,
                self._peer_expired), name="peer expiry"))
            if self.request_handlers:
                worker = node_requests.NodeRequestWorker(
                    node_requests.NodeContext(self.store, self.name, self.data_dir),
                    self.request_handlers)
                self._tasks.append(loop.create_task(worker.run(), name="node requests"))
            if self.notifier.watchdog_interval is not None:
                self._supervised_at = time.monotonic()
                self._tasks.append(loop.create_task(self._watchdog(), name="watchdog"))
            self.notifier.ready(f"{self.name} joined the cluster")
            await run_cycles(self._cycle, self.wake,
                             until=lambda: self.stopping and not self.local)
            return 0
        finally:
            await self._shutdown()

    def _check_data_dir(self) -> None:
        """Private files (umask 077), and a data directory nobody else can write: undo
        records in it are commands this agent runs."""
        restrict_umask()
        try:
            changed = check_data_dir(self.data_dir, trusted=(undo.UNDO_DIR,))
        except (UnsafePathError, OSError) as exc:
            raise AgentError(f"refusing to use the data directory: {exc}") from None
        if changed:
            log_event("data_private", node=self.name,
                      message=f"took group and others' access away from {changed} file(s) "
                              f"and folder(s) in the data directory {self.data_dir}")

    def _report_undone(self, undone: list[undo.Undone]) -> None:
        """To stderr and the cluster log (synchronously: called from the fence too)."""
        for u in undone:
            if u.error is None:
                event, message = "undone", f"removed {u.what} left by a resource host that is gone"
            else:
                event, message = "undo_failed", f"cannot remove {u.what}: {u.error}"
            message = f"{u.vs}/{u.resource} on {self.name}: {message}"
            self._log_queue.put_nowait(eventlog.note(self.name, event, message, vs=u.vs))

    def _request_stop(self, sig: int = signal.SIGTERM) -> None:
        name = signal.Signals(sig).name
        if self.stopping:
            # A second signal: no more waiting for offline; the hosts die now.
            hosts = [lvs for lvs in self.local.values() if not lvs.killing]
            log_event("stop_now", node=self.name,
                      message=f"{name} again: killing {len(hosts)} resource host(s) now")
            for lvs in hosts:
                self._kill_host(lvs, f"killed: {name} received twice", grace=0.0)
            return
        log_event("stop_requested", node=self.name,
                  message=f"{name}: stopping: taking virtual servers offline "
                  f"(send {name} again to kill their resource hosts now)")
        self.stopping = True
        self.notifier.stopping(f"{self.name} stopping: taking virtual servers offline")
        self.wake.set()

    async def _serve_metrics(self, view: ClusterView) -> None:
        """The node's metrics at the address the cluster file gives it, if any. A busy
        address is logged, not fatal: the node serves mail without its metrics."""
        node = view.applied_config().node(self.name)
        if node is None or node.metrics is None:
            return
        try:
            self._metrics_server = await serve_metrics(node.metrics, self.metrics_state)
        except OSError as exc:
            log_event("metrics_error", node=self.name,
                      message=f"cannot serve metrics at {node.metrics}: {exc.strerror or exc}")

    def metrics_state(self) -> NodeState:
        groups = {name: HostedGroup(lvs.state, dict(lvs.resources), lvs.metrics)
                  for name, lvs in self.local.items()}
        return NodeState(self.name, self.leader.is_leader, groups, self.counters,
                         self.rejoin_failures)

    async def _shutdown(self) -> None:
        self.notifier.stopping(f"{self.name} stopping")
        if self._metrics_server is not None:
            self._metrics_server.close()
        killed = list(self.local.values())  # still online: stopping did not finish
        for proc_vs in killed:
            proc_vs.proc.kill()
        self.hosts.close()
        alive: list[LocalVS] = []
        if killed:
            # SIGKILLed hosts revert nothing: do it for them before the lease goes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_REAP_TIMEOUT):
                    await asyncio.gather(*(lvs.proc.wait() for lvs in killed))
            alive = [lvs for lvs in killed if lvs.proc.returncode is None]
            self._report_undone(await asyncio.to_thread(undo.run_pending, self.data_dir,
                                                        self.name))
        for lvs in alive:
            log_event("host_not_reaped", node=self.name, vs=lvs.name,
                      message=f"{lvs.name}: resource host {lvs.proc.pid} still not gone "
                      f"{SHUTDOWN_REAP_TIMEOUT:g} s after SIGKILL; leaving its ownership to "
                      "expire with the lease (its own watchdog stops it at the deadline)")
        with contextlib.suppress(TimeoutError, CoordError):
            async with asyncio.timeout(2.0):
                await self._flush_log()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.keeper is not None:
            # Revoking releases ownership at once: only with every host proven gone.
            held = sorted(self._unreverted)
            if held:
                log_event("left_unreverted", node=self.name,
                          message=f"{', '.join(held)}: what the resource host left is not "
                          "reverted; leaving ownership to expire with the lease")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STORE_EXIT_TIMEOUT):
                    await self.keeper.stop(revoke=not alive and not held)
        if self.store is not None:
            with contextlib.suppress(TimeoutError, CoordError):
                async with asyncio.timeout(STORE_EXIT_TIMEOUT):
                    await self.store.close()

    async def _wait_for_config(self) -> ClusterView | None:
        assert self.store is not None
        announced = False
        while not self.stopping:
            view = await read_view(self.store)
            if view.config is not None or view.config_error is not None:
                try:
                    view.applied_config()
                except ConfigError as exc:
                    raise AgentError(f"cannot use the applied configuration: {exc}") from None
                nodes = view.node_names()
                if self.name not in nodes:
                    raise AgentError(
                        f"node {self.name!r} is not in the cluster configuration "
                        f"(nodes: {', '.join(nodes) or 'none'})"
                    )
                return view
            if not announced:
                log_event("waiting", node=self.name,
                          message="waiting for `clustermail config apply`")
                announced = True
            await asyncio.sleep(0.5)
        return None

    async def _register(self) -> None:
        assert self.store is not None and self.timing is not None
        timing = self.timing
        granted_at = time.monotonic()
        lease = await self.store.grant(timing.ttl, peers_expire=True)
        self.keeper = LeaseKeeper(
            self.store,
            lease,
            renew_interval=timing.renew_interval,
            safety_margin=timing.safety_margin,
            granted_at=granted_at,
            on_lost=self._fence,
        )
        self.keeper.on_renewed = self.counters.lease_renewed
        # At once, not on the feeder's next tick: a renewal that lands just before the
        # deadline (after a store stall) must reach the hosts before it passes.
        self.keeper.on_extended = self._tell_hosts
        record = NodeRecord(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                            lease=lease.id, draining=self.draining, backstop=lease.backstop)
        await self.store.put(keys.NODES + self.name, record.to_store(), lease=lease.id)
        self.keeper.start()
        await self._log("node_up", f"{self.name} joined the cluster (pid {os.getpid()})")
        if (raised := lease_raised(timing.ttl, lease.ttl)) is not None:
            await self._log("lease_ttl_raised", raised, level="warning")

    async def _peer_expired(self, w: Watched) -> None:
        self.wake.set()
        await self._log("peer_lease_expired",
                        f"{w.node}'s lease {w.lease:x} went unrenewed for its TTL: revoked "
                        f"it ({w.backstop:g} s before the store would have)")

    def _fence(self, reason: str) -> None:
        """Lease lost: kill every resource host now, synchronously, then rejoin."""
        self.counters.fenced += 1
        for lvs in self.local.values():
            lvs.proc.kill()
            self._fenced_hosts[lvs.name] = lvs.proc
        log_event("fenced", node=self.name, message=f"fenced: {reason}; killed {len(self.local)} "
                  "resource host(s)")
        self.local.clear()
        # Synchronously, like the kills: the next owner may bring the address up soon.
        self._report_undone(undo.run_pending(self.data_dir, self.name))
        self.wake.set()
        if not self.stopping:
            # Kept in _tasks: a task nothing refers to may be garbage-collected mid-run.
            self._tasks.append(asyncio.get_running_loop().create_task(self._rejoin(reason)))

    async def _rejoin(self, reason: str) -> None:
        """Registers again with a new lease, retrying until it works or the node stops:
        an agent that gave up would be a live process that no longer serves."""
        assert self.store is not None
        # A fresh lease is a fresh incarnation: whatever we owned went with the old one.
        attempt = 0
        while not self.stopping:
            attempt += 1
            try:
                await self._register()
            except CoordError as exc:
                self.rejoin_failures += 1
                delay = min(self.rejoin_max_delay, REJOIN_FIRST_DELAY * attempt)
                log_event("rejoin_failed", node=self.name,
                          message=f"cannot rejoin the cluster (attempt {attempt}): {exc}; "
                          f"retrying in {delay:g} s")
                await asyncio.sleep(delay)
                continue
            assert self.timing is not None
            self.leader.rejoined(self.timing.ttl)
            await self._log("node_rejoined", f"{self.name} rejoined after losing its lease "
                            f"({reason})")
            return

    # ------------------------------------------------------------------ loops

    async def _watch_loop(self) -> None:
        assert self.store is not None
        start: int | None = None
        while True:
            try:
                async for ev in self.store.watch(keys.PREFIX, start):
                    start = ev.revision + 1
                    self.wake.set()
            except CoordError as exc:
                log_event("watch_error", node=self.name, message=str(exc))
                start = None
                self.wake.set()
                await asyncio.sleep(0.2)

    async def _deadline_feeder(self) -> None:
        """Tells every resource host how long our lease is known good, on a schedule
        (besides at once on every renewal, :meth:`_tell_hosts`): a host that missed a
        line, or started meanwhile, hears it again within half a renew interval."""
        assert self.timing is not None
        while True:
            keeper = self.keeper
            if keeper is not None and not keeper.lost.is_set():
                self._tell_hosts(keeper.safe_until)
            await asyncio.sleep(self.timing.renew_interval / 2)

    def _tell_hosts(self, safe_until: float) -> None:
        """Sends every resource host its fence deadline: ours plus the host's grace."""
        for lvs in list(self.local.values()):
            lvs.proc.send(self._host_deadline(safe_until))

    def _host_deadline(self, safe_until: float) -> LeaseCommand:
        assert self.timing is not None
        return LeaseCommand(safe_until + self.timing.host_grace)

    async def _supervise(self) -> None:
        """Pings every resource host each renew interval; kills one that is hung."""
        assert self.timing is not None
        seq = 0
        last = time.monotonic()
        while True:
            interval = self.timing.renew_interval
            await asyncio.sleep(interval)
            now = time.monotonic()
            # Time this loop did not run (the agent frozen or starved) is not the
            # host's silence: its answers may be waiting in the pipe.
            late, last = max(0.0, now - last - interval), now
            self._supervised_at = now
            seq += 1
            for lvs in list(self.local.values()):
                watch = lvs.proc.watch
                if lvs.killing or watch is None:
                    continue
                if late > interval:
                    watch.excuse(late)
                why = watch.verdict(now)
                if why is not None:
                    await self._kill_hung(lvs, why)
                else:
                    lvs.proc.send(PingCommand(seq))

    async def _watchdog(self) -> None:
        """systemd's watchdog, pinged at half its period while the supervision loop
        goes round: a hung agent (event loop or supervision) is restarted by systemd."""
        assert self.notifier.watchdog_interval is not None and self.timing is not None
        interval = self.notifier.watchdog_interval
        while True:
            # One supervision round takes renew_interval; two missed rounds is hung.
            if time.monotonic() - self._supervised_at <= 2 * self.timing.renew_interval:
                self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _kill_hung(self, lvs: LocalVS, why: str) -> None:
        """Kills a hung host and says why. Hung while still bringing its group online,
        it is a start failure like any other: the status, the give-up record and so the
        failover history carry the line (unique to this host, so it never counts as the
        same failure coming back)."""
        starting = lvs.starting and not lvs.stopping
        self._kill_host(lvs, f"{why}{' while starting' if starting else ''}; killed")
        lvs.state = "failed"
        if starting:
            lvs.start_failure = lvs.reason
        await self._log("host_hung", f"{lvs.name}: {lvs.reason}", vs=lvs.name)
        with contextlib.suppress(CoordError):
            await self._write_status(lvs)

    def _kill_host(self, lvs: LocalVS, why: str, grace: float = KILL_GRACE) -> None:
        """Kills a host in the background; its exit then runs the usual path (undo,
        give the virtual server up, release it once reaped)."""
        lvs.killing = True
        lvs.failed = True  # not a clean stop: the exit gives the virtual server up
        lvs.reason = f"resource host {lvs.proc.pid} {why}"
        lvs.stopping = True
        task = asyncio.get_running_loop().create_task(lvs.proc.kill_hung(grace))
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    def _stop_deadline(self, lvs: LocalVS) -> None:
        """The host was asked to go offline: its offline budget starts now."""
        watch = lvs.proc.watch
        if watch is None:
            return
        try:
            timeouts = [r.policy.pending_timeout for r in parse_spec(lvs.spec).resources]
        except ValueError:
            timeouts = []
        watch.stopping(time.monotonic(), offline_budget(timeouts, watch.timeout))

    def _lease_ok(self) -> bool:
        k = self.keeper
        return k is not None and not k.lost.is_set() and time.monotonic() < k.safe_until

    async def _cycle(self) -> None:
        assert self.store is not None
        if not self._lease_ok():
            return
        try:
            view = await read_view(self.store)
            self._watched = watched_leases(
                view.nodes, view.leader, view.lease_of(keys.LEADER),
                [(o.node, view.lease_of(keys.OWNER + vs)) for vs, o in view.owner.items()],
                self.name)
            reasons: list[str] = []
            if view.cluster_config is not None and view.config_revision != self._config_rev:
                self._config_rev = view.config_revision
                self.timing = view.cluster_config.timing
            reasons.extend(f"ignoring a malformed record: {p}" for p in view.problems
                           if p.key != keys.CONFIG)  # said below
            if self.stopping and not self.draining:
                await self._start_draining()
            leader = view.leader
            if leader is None and not self.stopping:
                leader = await self._campaign()
            if leader != self.name:
                self.leader.resign()
            if leader == self.name and self._lease_ok():
                try:
                    reasons.extend(await self.leader.step(self.store, view))
                except ConfigError as exc:
                    reasons.append(f"leader: cannot place: {exc}")
            problem = view.config_problem()
            if problem is not None and not self.stopping:
                reasons.append(self._hold(problem))
            else:
                reasons.extend(await self._reconcile(view))
        except CoordError as exc:
            reasons = [f"store error: {exc}"]
        line = "; ".join(reasons) or f"no action: {self._summary()}"
        if line != self.last_reason:
            self.last_reason = line
            log_event("cycle", node=self.name, message=line)

    def _hold(self, problem: str) -> str:
        """No usable configuration (unreadable, invalid, deleted): like Pacemaker with
        an unreadable CIB, start, stop and change nothing (the leader moves nothing
        either) until a valid one is applied. Only stopping the node takes its
        virtual servers offline."""
        running = ", ".join(sorted(self.local)) or "nothing"
        return (f"no usable configuration ({problem}): keeping what runs here as it is "
                f"({running}) until a valid one is applied")

    def _summary(self) -> str:
        if not self.local:
            return f"{self.name} hosts nothing"
        parts = [f"{n} {v.state}" for n, v in sorted(self.local.items())]
        return f"{self.name} hosts " + ", ".join(parts)

    def _my_lease(self) -> int:
        assert self.keeper is not None
        return self.keeper.id

    async def _campaign(self) -> str | None:
        assert self.store is not None
        result = await self.store.txn(
            [Compare.absent(keys.LEADER)],
            [Put(keys.LEADER, LeaderRecord(self.name).to_store(), lease=self._my_lease())],
            [],
        )
        if result.succeeded:
            await self._log("leader_elected", f"{self.name} is the leader")
            return self.name
        kv = await self.store.get(keys.LEADER)
        try:
            return LeaderRecord.from_store(kv.key, kv.value).node if kv else None
        except RecordError:
            return None  # unreadable: nobody leads until its lease expires

    async def _start_draining(self) -> None:
        assert self.store is not None
        self.draining = True
        kv = await self.store.get(keys.NODES + self.name)
        if kv is not None:
            try:
                record = NodeRecord.from_store(kv.key, kv.value)
            except RecordError:
                assert self.keeper is not None
                record = NodeRecord(pid=os.getpid(), host=socket.gethostname(),
                                    lease=self._my_lease(), backstop=self.keeper.lease.backstop)
            await self.store.txn(
                [Compare.lease_is(kv.key, self._my_lease())],
                [Put(kv.key, replace(record, draining=True).to_store(), lease=self._my_lease())],
            )
        if self.leader.is_leader:
            await self.store.txn(
                [Compare.value_is(keys.LEADER, LeaderRecord(self.name).to_store())],
                [Delete(keys.LEADER)],
            )
        await self._log("node_draining",
                        f"{self.name} is stopping: moving its virtual servers away")

    # ------------------------------------------------------------------ reconcile

    async def _reconcile(self, view: ClusterView) -> list[str]:
        reasons: list[str] = []
        config = view.config or {}
        known = set(view.vs_names())
        for vs in sorted(known | set(self.local)):
            target = view.assignment(vs).node
            assign_rev = view.mod_revision(keys.ASSIGN + vs)
            lvs = self.local.get(vs)
            if vs in known and target == self.name and not self.stopping:
                if lvs is None:
                    reason = await self._maybe_start(view, config, vs, assign_rev)
                    if reason:
                        reasons.append(reason)
                else:
                    self._apply_resource_intents(view, lvs)
                    self._apply_config(view, config, lvs)
            elif lvs is not None and not lvs.stopping:
                lvs.stopping = True
                lvs.proc.send(OfflineCommand())
                self._stop_deadline(lvs)
                where = f"assigned to {target}" if target else "not assigned to any node"
                if self.stopping:
                    where = f"{self.name} is stopping"
                reasons.append(f"taking {vs} offline: {where}")
                await self._log("vs_offline_pending", f"taking {vs} offline ({where})", vs=vs)
        return reasons

    async def _maybe_start(
        self, view: ClusterView, config: dict[str, Any], vs: str, assign_rev: int
    ) -> str | None:
        assert self.store is not None
        if self.given_up.get(vs) == assign_rev:
            return None
        fenced = self._fenced_hosts.get(vs)
        if fenced is not None:
            if fenced.returncode is None:
                # Its exit wakes the agent (_on_host_exit): the take is tried again then.
                return (f"{vs}: waiting for its resource host {fenced.pid}, killed at the "
                        "fence, to exit before starting it here again")
            del self._fenced_hosts[vs]
        # The take is bound to this lease; if it is lost while we await (the store
        # stalled, the agent starved) a rejoin may install a new one, and a host
        # started then would serve under a key that expires with the old lease.
        keeper = self.keeper
        assert keeper is not None
        held = view.meta.get(keys.OWNER + vs)
        if held is not None and held.lease != keeper.id:
            owner = view.owner.get(vs)
            holder = owner.node if owner is not None else "?"
            return f"{vs}: waiting for {holder}'s lease on it to expire before taking it"
        new_epoch = view.epoch_of(vs) + 1
        record = OwnerRecord(node=self.name, epoch=new_epoch, since=time.time())
        result = await self.store.txn(
            [Compare.absent(keys.OWNER + vs),
             Compare.mod_is(keys.EPOCH + vs, view.mod_revision(keys.EPOCH + vs))],
            [
                Put(keys.OWNER + vs, record.to_store(), lease=keeper.id),
                Put(keys.EPOCH + vs, EpochRecord(new_epoch).to_store()),
            ],
        )
        if not result.succeeded:
            return f"{vs}: ownership changed while taking it; will re-read"
        if not self._still_live(keeper):
            return self._took_under_lost_lease(vs, keeper)
        spec = host_spec(
            config,
            vs,
            node=self.name,
            epoch=new_epoch,
            store_url=self.store_url,
            data_dir=self.data_dir,
            offline_resources=view.offline_resources(vs),
        )
        proc = await self.hosts.take()
        if not self._still_live(keeper):
            # Fenced while the host was coming: the fence killed what was in
            # self.local, not this one. No await from here to self.local below.
            proc.kill()
            return self._took_under_lost_lease(vs, keeper)
        proc.start(parse_spec(spec), self._host_timeout(view, vs))
        lvs = LocalVS(vs, new_epoch, assign_rev, proc, spec=spec,
                      config_revision=view.config_revision)
        lvs.offline_resources = set(spec["offline_resources"])
        self.local[vs] = lvs
        lvs.reader = asyncio.get_running_loop().create_task(self._read_host(lvs))
        proc.send(self._host_deadline(keeper.safe_until))
        await self._log(
            "vs_online_pending",
            f"bringing {vs} online on {self.name} "
            f"(epoch {new_epoch}, resource host pid {proc.pid})",
            vs=vs,
        )
        await self._write_status(lvs)
        return f"took {vs} (epoch {new_epoch})"

    def _still_live(self, keeper: LeaseKeeper) -> bool:
        """``keeper`` is still this agent's lease and known good now."""
        return self.keeper is keeper and self._lease_ok()

    def _took_under_lost_lease(self, vs: str, keeper: LeaseKeeper) -> str:
        # Nothing to undo: the ownership key goes with the lost lease, and the
        # next owner waits for that (the fencing epoch was bumped, never reused).
        return (f"{vs}: taken under lease {keeper.id:x}, lost meanwhile; not started "
                "(the key expires with that lease)")

    def _host_timeout(self, view: ClusterView, vs: str) -> float:
        config = view.cluster_config
        server = config.virtual_server(vs) if config is not None else None
        if config is None or server is None:
            return DEFAULT_HOST_TIMEOUT
        return config.host_timeout(server)

    def _apply_config(self, view: ClusterView, config: dict[str, Any], lvs: LocalVS) -> None:
        """A changed configuration reaches a running virtual server as a live update:
        added resources come online, removed ones go offline, the rest keep running."""
        if lvs.stopping or lvs.config_revision == view.config_revision:
            return
        lvs.config_revision = view.config_revision
        if lvs.proc.watch is not None:
            lvs.proc.watch.timeout = self._host_timeout(view, lvs.name)
        try:
            spec = host_spec(config, lvs.name, node=self.name, epoch=lvs.epoch,
                             store_url=self.store_url, data_dir=self.data_dir,
                             offline_resources=sorted(lvs.offline_resources))
        except (KeyError, ValueError) as exc:
            log_event("config_error", node=self.name, vs=lvs.name, message=str(exc))
            return
        if spec["resources"] != lvs.spec.get("resources"):
            lvs.spec = spec
            lvs.proc.send(UpdateCommand(parse_spec(spec)))
            log_event("vs_update", node=self.name, vs=lvs.name,
                      message=f"{lvs.name}: resources changed; updating it live")

    def _apply_resource_intents(self, view: ClusterView, lvs: LocalVS) -> None:
        wanted = set(view.offline_resources(lvs.name))
        for res in sorted(wanted - lvs.offline_resources):
            lvs.proc.send(ResourceOfflineCommand(res))
        for res in sorted(lvs.offline_resources - wanted):
            lvs.proc.send(ResourceOnlineCommand(res))
        lvs.offline_resources = wanted

    # ------------------------------------------------------------------ host events

    async def _read_host(self, lvs: LocalVS) -> None:
        try:
            await lvs.proc.follow(lambda event: self._on_host_event(lvs, event))
        finally:
            await self._on_host_exit(lvs)

    async def _on_host_event(self, lvs: LocalVS, event: HostEvent) -> None:
        if isinstance(event, MetricsEvent):
            lvs.metrics = event.text  # served at the next scrape; nothing else changes
            return
        if isinstance(event, ResourceEvent):
            res, state = event.resource, event.state.value
            if state == "failed":
                self.counters.resource_failed(lvs.name, res)
            lvs.resources[res] = state
            if event.pid is not None:
                lvs.resource_pids[res] = event.pid
            # A routine step of bringing the group online: the state says it all.
            reason = "" if event.group_step else event.reason
            await self._log(
                f"resource_{state}",
                f"{lvs.name}/{res} {state}" + (f": {reason}" if reason else ""),
                vs=lvs.name,
                resource=res,
            )
        elif isinstance(event, GroupEvent):
            state = event.state.value
            await self._log(f"vs_{state}", f"{lvs.name} {state} on {self.name}"
                            + (f": {event.reason}" if event.reason else ""), vs=lvs.name)
            if lvs.killing:
                return  # its last words (SIGTERM): why the agent killed it stands
            lvs.state = state
            lvs.reason = event.reason
            lvs.starting = False
            if event.state is GroupState.FAILED and not lvs.stopping:
                lvs.failed = True
                lvs.stopping = True
                lvs.start_failure = event.start_failure
                lvs.proc.send(OfflineCommand())
                self._stop_deadline(lvs)
        with contextlib.suppress(CoordError):
            await self._write_status(lvs)

    async def _release(self, lvs: LocalVS) -> None:
        """Deletes our ownership and status keys (only while they are ours). Called only
        once the host has been reaped: ownership goes with a dead host, never a live one."""
        if lvs.released or not self._lease_ok():
            return
        lvs.released = True
        assert self.store is not None
        try:
            await self.store.txn(
                [Compare.lease_is(keys.OWNER + lvs.name, self._my_lease())],
                [Delete(keys.OWNER + lvs.name), Delete(keys.STATUS + lvs.name)],
            )
        except CoordError as exc:
            lvs.released = False
            log_event("store_error", node=self.name, vs=lvs.name, message=str(exc))

    async def _undo_before_release(self, lvs: LocalVS) -> bool:
        """Runs what a dead host left on the machine (undo records) before its virtual
        server is let go. While a record's command fails, the virtual server stays ours
        (its owner key, so no other node brings the same address up beside one still
        here) and the command is tried again, as a failed stop blocks a resource in
        Pacemaker. False: the virtual server is no longer ours to release (fenced, the
        lease lost, or the node stopping: those paths revert and let go themselves)."""
        undone = await asyncio.to_thread(undo.run_pending, self.data_dir, self.name, lvs.name)
        self._report_undone(undone)
        delay = UNDO_RETRY_FIRST
        failing = {u.resource: u.error for u in undone if u.error is not None}
        if failing:
            lvs.killing = True  # dead already: nothing left to supervise
            lvs.state, lvs.reason = "failed", (
                f"cannot revert what its resource host left ({', '.join(sorted(failing))}); "
                f"holding {lvs.name} here until it is reverted")
            await self._log("vs_held", f"{lvs.name} on {self.name}: {lvs.reason}", vs=lvs.name)
            await self._write_status(lvs)
        while failing:
            await asyncio.sleep(delay)
            delay = min(2 * delay, UNDO_RETRY_MAX)
            if self.local.get(lvs.name) is not lvs or not self._lease_ok() or self.stopping:
                return False
            undone = await asyncio.to_thread(undo.run_pending, self.data_dir, self.name,
                                             lvs.name)
            # Each success once; a failure again only when it says something new.
            self._report_undone([u for u in undone if u.error is None
                                 or failing.get(u.resource) != u.error])
            failing = {u.resource: u.error for u in undone if u.error is not None}
        return self.local.get(lvs.name) is lvs

    async def _on_host_exit(self, lvs: LocalVS) -> None:
        if self.local.get(lvs.name) is not lvs:
            # Fenced: already forgotten (and undone); a take of it waits for this exit.
            if self._fenced_hosts.get(lvs.name) is lvs.proc:
                del self._fenced_hosts[lvs.name]
                self.wake.set()
            return
        # While the dead host still holds its slot, so no new host of this virtual
        # server can start here and write a record we would undo.
        if not await self._undo_before_release(lvs):
            if self.stopping and self.local.get(lvs.name) is lvs:
                # The stop must finish: the host is gone, what it left is not reverted.
                # The lease is then left to expire rather than revoked (_shutdown).
                del self.local[lvs.name]
                self._unreverted.add(lvs.name)
            return  # fenced or lease lost: that path reverted and let go
        del self.local[lvs.name]
        store = self.store
        assert store is not None
        clean = lvs.stopping and not lvs.failed and lvs.proc.returncode == 0
        try:
            if not clean:
                # The group failed here (or its host crashed): give it up so the
                # leader moves it, and don't take it again until reassigned.
                self.given_up[lvs.name] = lvs.assign_revision
                reason = lvs.reason if lvs.failed else (
                    f"resource host exited with code {lvs.proc.returncode}")
                giveup = GiveUpRecord(node=self.name, time=time.time(), reason=reason,
                                      epoch=lvs.epoch, start_failure=lvs.start_failure)
                await store.put(keys.GIVEUP + lvs.name, giveup.to_store())
                await self._log("vs_failed", f"{lvs.name} failed on {self.name}: {reason}",
                                vs=lvs.name)
            else:
                await self._log("vs_offline", f"{lvs.name} is offline on {self.name}", vs=lvs.name)
            await self._release(lvs)
        except CoordError as exc:
            log_event("store_error", node=self.name, vs=lvs.name, message=str(exc))
        self.wake.set()

    async def _write_status(self, lvs: LocalVS) -> None:
        assert self.store is not None
        if not self._lease_ok():
            return
        status = StatusRecord(node=self.name, state=lvs.state, epoch=lvs.epoch, pid=lvs.proc.pid,
                              resources=dict(lvs.resources),
                              resource_pids=dict(lvs.resource_pids), reason=lvs.reason,
                              since=lvs.started, start_failure=lvs.start_failure)
        if lvs.released:
            return
        lease = self._my_lease()
        # Only while we own it: a late status must never outlive a hand-over.
        await self.store.txn(
            [Compare.lease_is(keys.OWNER + lvs.name, lease)],
            [Put(keys.STATUS + lvs.name, status.to_store(), lease=lease)],
        )

    async def _log(self, event: str, message: str, **kw: Any) -> None:
        """Logs to the process log now and to the cluster log in the background
        (entries carry their own time, so the log stays in order)."""
        self._log_queue.put_nowait(eventlog.note(self.name, event, message, **kw))

    async def _flush_log(self) -> None:
        while not self._log_queue.empty() and self.store is not None:
            await eventlog.append(self.store, self._log_queue.get_nowait())

    async def _log_writer(self) -> None:
        while True:
            entry = await self._log_queue.get()
            if self.store is not None:
                with contextlib.suppress(CoordError):
                    await eventlog.append(self.store, entry)


#: Seconds between two cycles when nothing wakes the agent sooner.
IDLE_CYCLE = 1.0


async def run_cycles(cycle: Callable[[], Awaitable[None]], wake: asyncio.Event, *,
                     until: Callable[[], bool], idle: float = IDLE_CYCLE) -> None:
    """Runs ``cycle`` until ``until()`` holds (asked before each cycle and after it):
    again as soon as ``wake`` is set, else after ``idle`` seconds. The event is cleared
    before each cycle reads the store, not after it: a change that lands while a cycle
    runs (the leader's own placement, a host's event) starts the next cycle at once.
    Cleared after, such a change was lost and waited out the idle second: a leader
    that placed a failed-over virtual server on itself started it a second late."""
    while not until():
        wake.clear()
        await cycle()
        if until():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(idle):
                await wake.wait()


#: Pause after the first failed attempt to rejoin; each failure adds as much,
#: up to the agent's ``rejoin_max_delay``.
REJOIN_FIRST_DELAY = 0.2
REJOIN_MAX_DELAY = 2.0
#: A dead host's undo record that failed is tried again after this, doubling up to
#: UNDO_RETRY_MAX, while its virtual server is held here.
UNDO_RETRY_FIRST = 0.5
UNDO_RETRY_MAX = 10.0
#: At exit: how long SIGKILLed resource hosts have to be reaped before the agent
#: gives up proving them gone (and so does not revoke its lease).
SHUTDOWN_REAP_TIMEOUT = 5.0
#: At exit: bound on revoking the lease and closing the store (it may be unreachable).
STORE_EXIT_TIMEOUT = 5.0


class AgentError(Exception):
    """A node agent cannot run (e.g. its name is not in the configuration)."""


def _scheme_of(store_url: str) -> str:
    """The store URL's scheme, for the spare hosts' preload; "" for a URL that does not
    parse (opening the store reports what is wrong with it)."""
    try:
        return parse_store_url(store_url).scheme
    except InvalidStoreURL:
        return ""
