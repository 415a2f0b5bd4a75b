"""The leader: turns one view of the store into a placement snapshot, runs the pure
placement function, and applies its decisions in one compare-and-swap transaction.

The transaction compares the leader key (still ours) and the mod revision of
every assignment it rewrites, so a deposed leader or a concurrent change makes
it fail harmlessly; the next cycle decides again from a fresh view.
"""

from __future__ import annotations

import time

from clustermail.cluster import eventlog, keys
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.placement import Decision, Placement, ReasonCode, explain, place
from clustermail.cluster.records import (
    ANY_NODE,
    AssignmentRecord,
    FailoverEntry,
    FailoverHistory,
)
from clustermail.cluster.snapshot import FailoverRecord, NodeStatus, Snapshot, VsState, VsStatus
from clustermail.cluster.view import ClusterView
from clustermail.coord import Compare, Delete, Put, Store, TxnOp

_STATUS = {
    "online": VsStatus.ONLINE,
    "partially_online": VsStatus.ONLINE,
    "online_pending": VsStatus.STARTING,
    "offline_pending": VsStatus.STOPPING,
    "offline": VsStatus.OFFLINE,
    "failed": VsStatus.FAILED,
}

TRIM_EVERY = 60.0  # seconds between event log trims
#: While no virtual server runs anywhere (the cluster is forming), a new leader
#: waits this long for every node to join before placing, so virtual servers
#: start on their preferred owners rather than on whichever node came up first.
FORM_WAIT = 10.0


def node_statuses(view: ClusterView) -> dict[str, NodeStatus]:
    out: dict[str, NodeStatus] = {}
    for name in view.node_names():
        record = view.nodes.get(name)
        if record is None or record.draining:
            # A draining node is leaving: place its virtual servers elsewhere now.
            out[name] = NodeStatus.DOWN
        elif view.paused(name):
            out[name] = NodeStatus.PAUSED
        else:
            out[name] = NodeStatus.UP
    return out


def vs_state(view: ClusterView, vs: str) -> VsState:
    assignment = view.assignment(vs)
    owner = assignment.node
    if owner is None:
        # Left failed earlier (no node, threshold): it stays failed, not merely offline.
        left = VsStatus.FAILED if assignment.failed else VsStatus.OFFLINE
        return VsState(None, left, assignment.manual)
    giveup = view.giveup.get(vs)
    if giveup is not None and giveup.node == owner:
        return VsState(owner, VsStatus.FAILED, assignment.manual, giveup.start_failure)
    status = view.status.get(vs)
    if status is not None and status.node == owner:
        state = _STATUS.get(status.state, VsStatus.STARTING)
        failure = status.start_failure if state is VsStatus.FAILED else ""
        return VsState(owner, state, assignment.manual, failure)
    return VsState(owner, VsStatus.STARTING, assignment.manual)


def build_snapshot(
    view: ClusterView, config: ClusterConfig, now: float, moves: dict[str, str] | None = None
) -> Snapshot:
    failovers = [
        FailoverRecord(vs, entry.time, entry.node, entry.failure)
        for vs, history in sorted(view.failures.items())
        for entry in history.entries
    ]
    if moves is None:
        moves = pending_moves(view)
    return Snapshot(
        config=config,
        now=now,
        nodes=node_statuses(view),
        virtual_servers={vs: vs_state(view, vs) for vs in view.vs_names()},
        failovers=failovers,
        move_requests={vs: to for vs, to in moves.items() if to != ANY_NODE},
        failures_cleared={
            vs: intent.cleared_at
            for vs, intent in view.vs_admin.items()
            if intent.cleared_at
        },
        offline=frozenset(vs for vs, intent in view.vs_admin.items() if intent.offline),
        utc_offset=float(time.localtime(now).tm_gmtoff),
    )


def pending_moves(view: ClusterView) -> dict[str, str]:
    """Move requests not yet answered: vs -> target node, or ANY_NODE."""
    return {
        vs: target
        for vs, intent in view.vs_admin.items()
        if (target := intent.pending_move) is not None
    }


def resolve_any_moves(view: ClusterView, config: ClusterConfig, now: float) -> dict[str, str]:
    """A move without a target goes to the first node placement would accept."""
    moves = pending_moves(view)
    for vs, target in list(moves.items()):
        if target != ANY_NODE:
            continue
        server = config.virtual_server(vs)
        current = view.assignment(vs).node
        if server is None:
            continue
        order = list(server.preferred_owners) + sorted(
            n for n in config.possible_owners(server) if n not in server.preferred_owners
        )
        moves[vs] = ANY_NODE
        for node in order:
            if node == current:
                continue
            trial = place(build_snapshot(view, config, now, {**moves, vs: node}))
            if trial[vs].code is ReasonCode.MOVE:
                moves[vs] = node
                break
    return moves


def compute(view: ClusterView, now: float) -> tuple[ClusterConfig, Snapshot, Placement]:
    """Placement on one view; ``ConfigError`` if the applied configuration is invalid."""
    config = view.applied_config()
    moves = resolve_any_moves(view, config, now)
    snapshot = build_snapshot(view, config, now, moves)
    return config, snapshot, place(snapshot)


def explain_vs(view: ClusterView, vs: str, now: float) -> str:
    _, snapshot, placement = compute(view, now)
    text = explain(snapshot, vs)
    decision = placement[vs]
    owner = view.owner.get(vs)
    if owner is not None and owner.node != decision.owner:
        text += f"\n(now running on {owner.node}; the move is in progress)"
    return text


def assignment_record(d: Decision, now: float) -> AssignmentRecord:
    return AssignmentRecord(
        node=d.owner,
        manual=d.manual,
        code=d.code.value,
        reason=d.reason,
        failed=d.owner is None and d.code in (ReasonCode.NO_NODE, ReasonCode.THRESHOLD,
                                              ReasonCode.REPEATED),
        time=now,
    )


#: Failover history older than this is dropped, unless a virtual server's
#: failover period is longer (placement counts failovers within the period).
HISTORY_DAYS = 7
#: Entries kept per virtual server, unless a failover threshold is higher.
HISTORY_ENTRIES = 100


def history_limits(config: ClusterConfig) -> tuple[float, int]:
    """(seconds, entries) of failover history to keep: never less than placement counts."""
    seconds = max([HISTORY_DAYS * 86400.0]
                  + [vs.failover_period_hours * 3600 for vs in config.virtual_servers])
    entries = max([HISTORY_ENTRIES]
                  + [config.failover_threshold(vs) for vs in config.virtual_servers])
    return seconds, entries


class Leader:
    """Runs placement and writes assignments while this node holds the leader key."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.is_leader = False
        self.last_trim = 0.0
        self.elected_at: float | None = None
        #: Until when (monotonic) a node that has just rejoined waits for the others.
        self.rejoin_wait_until = 0.0

    def rejoined(self, wait: float) -> None:
        """This node lost its lease and has registered again. If the store, not the
        node, was the trouble (a stalled store fences every node at once), the others
        are rejoining too: while it leads, it waits up to ``wait`` seconds for the
        missing nodes before placing, instead of failing their virtual servers over
        (and burning their failover thresholds) for a fraction of a second's absence.
        A leader that never lost its lease places at once, as after a node's crash."""
        self.rejoin_wait_until = time.monotonic() + wait

    def resign(self) -> None:
        self.is_leader = False
        self.elected_at = None

    async def step(self, store: Store, view: ClusterView) -> list[str]:
        self.is_leader = True
        if view.cluster_config is None:
            return []  # nothing moves without a usable configuration (the agents say why)
        now = time.time()
        if self.elected_at is None:
            self.elected_at = time.monotonic()
        missing = [n for n in view.node_names() if n not in view.nodes]
        if not view.owner and missing and time.monotonic() - self.elected_at < FORM_WAIT:
            return [f"cluster forming: waiting up to {FORM_WAIT:g} s for "
                    f"{', '.join(missing)} to join before placing"]
        if missing and (left := self.rejoin_wait_until - time.monotonic()) > 0:
            return [f"rejoined after losing the lease: waiting {left:.1f} s more for "
                    f"{', '.join(missing)} to rejoin before placing"]
        config, _, placement = compute(view, now)
        ops: list[TxnOp] = []
        compares = [Compare.value_is(keys.LEADER, self.node)]
        lines: list[str] = []
        draining = {n for n, r in view.nodes.items() if r.draining}
        new_failures: dict[str, list[FailoverEntry]] = {}
        for d in placement:
            vs = d.virtual_server
            old = view.assign.get(vs)
            record = assignment_record(d, now)
            if old is None or not old.same_decision(record):
                key = keys.ASSIGN + vs
                compares.append(Compare.mod_is(key, view.mod_revision(key)))
                ops.append(Put(key, record.to_store()))
                # Log decisions, not every rewording of a reason.
                if old is None or old.node != d.owner or old.code != d.code.value:
                    lines.append(d.line())
            if d.failover is not None and d.failover.node not in draining:
                new_failures.setdefault(vs, []).append(
                    FailoverEntry(d.failover.time, d.failover.node, d.failover.virtual_server,
                                  d.failover.failure))
            giveup = view.giveup.get(vs)
            if giveup is not None and giveup.node != d.owner:
                key = keys.GIVEUP + vs
                compares.append(Compare.mod_is(key, view.mod_revision(key)))
                ops.append(Delete(key))
            intent = view.vs_admin.get(vs)
            if intent is not None and intent.pending_move is not None:
                key = keys.VS_ADMIN + vs
                compares.append(Compare.mod_is(key, view.mod_revision(key)))
                ops.append(Put(key, intent.answered(d.refused_move or "").to_store()))
                if d.refused_move:
                    lines.append(f"{vs}: move refused: {d.refused_move}")
        keep_seconds, keep_entries = history_limits(config)
        for vs, entries in new_failures.items():
            key = keys.FAILURES + vs
            history = view.failures.get(vs) or FailoverHistory()
            compares.append(Compare.mod_is(key, view.mod_revision(key)))
            ops.append(Put(key, history.extended(entries, now, keep_seconds,
                                                 keep_entries).to_store()))
        if not ops:
            await self._maybe_trim(store, now)
            return []
        result = await store.txn(compares, ops)
        if not result.succeeded:
            return ["placement not applied: the store changed meanwhile; deciding again"]
        for line in lines:
            vs = line.split(":", 1)[0]
            await eventlog.append(store, eventlog.note(self.node, "placement", line, vs=vs))
        await self._maybe_trim(store, now)
        return [f"leader: {line}" for line in lines]

    async def _maybe_trim(self, store: Store, now: float) -> None:
        if now - self.last_trim > TRIM_EVERY:
            self.last_trim = now
            await eventlog.trim(store, self.node)
