"""The leader: turns one view of the store into a placement snapshot, runs the pure
placement function, and applies its decisions in one compare-and-swap transaction.

The transaction compares the leader key (still ours) and the mod revision of
every assignment it rewrites, so a deposed leader or a concurrent change makes
it fail harmlessly; the next cycle decides again from a fresh view.
"""

from __future__ import annotations

import json
import time
from typing import Any

from clustermail.cluster import eventlog, keys
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.placement import Decision, Placement, ReasonCode, explain, place
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
        if record is None or record.get("draining"):
            # A draining node is leaving: place its virtual servers elsewhere now.
            out[name] = NodeStatus.DOWN
        elif view.node_admin.get(name, {}).get("paused"):
            out[name] = NodeStatus.PAUSED
        else:
            out[name] = NodeStatus.UP
    return out


def vs_state(view: ClusterView, vs: str) -> VsState:
    assignment = view.assign.get(vs, ({}, 0))[0]
    owner = assignment.get("node")
    manual = bool(assignment.get("manual"))
    if owner is None:
        # Left failed earlier (no node, threshold): it stays failed, not merely offline.
        left = VsStatus.FAILED if assignment.get("failed") else VsStatus.OFFLINE
        return VsState(None, left, manual)
    giveup = view.giveup.get(vs, ({}, 0))[0]
    if giveup.get("node") == owner:
        return VsState(owner, VsStatus.FAILED, manual)
    status = view.status.get(vs)
    if status is not None and status.get("node") == owner:
        return VsState(owner, _STATUS.get(str(status.get("state")), VsStatus.STARTING), manual)
    return VsState(owner, VsStatus.STARTING, manual)


def build_snapshot(
    view: ClusterView, config: ClusterConfig, now: float, moves: dict[str, str] | None = None
) -> Snapshot:
    failovers = [
        FailoverRecord(vs, float(r["time"]), str(r["node"]))
        for vs, (records, _) in sorted(view.failures.items())
        for r in records
    ]
    if moves is None:
        moves = pending_moves(view)
    return Snapshot(
        config=config,
        now=now,
        nodes=node_statuses(view),
        virtual_servers={vs: vs_state(view, vs) for vs in view.vs_names()},
        failovers=failovers,
        move_requests={vs: to for vs, to in moves.items() if to != "*"},
        failures_cleared={
            vs: float(admin["cleared_at"])
            for vs, (admin, _) in view.vs_admin.items()
            if admin.get("cleared_at")
        },
        offline=frozenset(vs for vs, (admin, _) in view.vs_admin.items() if admin.get("offline")),
        utc_offset=float(time.localtime(now).tm_gmtoff),
    )


def pending_moves(view: ClusterView) -> dict[str, str]:
    """Move requests not yet answered: vs -> target node, or "*" for any other node."""
    return {
        vs: str(admin["move_to"])
        for vs, (admin, _) in view.vs_admin.items()
        if admin.get("move_id") and admin.get("move_done") != admin.get("move_id")
    }


def resolve_any_moves(view: ClusterView, config: ClusterConfig, now: float) -> dict[str, str]:
    """A move without a target goes to the first node placement would accept."""
    moves = pending_moves(view)
    for vs, target in list(moves.items()):
        if target != "*":
            continue
        server = config.virtual_server(vs)
        current = view.assign.get(vs, ({}, 0))[0].get("node")
        if server is None:
            continue
        order = list(server.preferred_owners) + sorted(
            n for n in config.possible_owners(server) if n not in server.preferred_owners
        )
        moves[vs] = "*"
        for node in order:
            if node == current:
                continue
            trial = place(build_snapshot(view, config, now, {**moves, vs: node}))
            if trial[vs].code is ReasonCode.MOVE:
                moves[vs] = node
                break
    return moves


_parsed: dict[int, ClusterConfig] = {}


def applied_config(view: ClusterView) -> ClusterConfig:
    """The applied configuration, validated once per revision: the leader decides on
    every store change, and the configuration rarely changes."""
    config = _parsed.get(view.config_revision)
    if config is None:
        config = ClusterConfig.from_dict(view.config or {}, "the applied configuration")
        _parsed.clear()
        _parsed[view.config_revision] = config
    return config


def compute(view: ClusterView, now: float) -> tuple[ClusterConfig, Snapshot, Placement]:
    config = applied_config(view)
    moves = resolve_any_moves(view, config, now)
    snapshot = build_snapshot(view, config, now, moves)
    return config, snapshot, place(snapshot)


def explain_vs(view: ClusterView, vs: str, now: float) -> str:
    _, snapshot, placement = compute(view, now)
    text = explain(snapshot, vs)
    decision = placement[vs]
    owner = view.owner.get(vs, ({}, None))[0].get("node")
    if owner and owner != decision.owner:
        text += f"\n(now running on {owner}; the move is in progress)"
    return text


def assignment_record(d: Decision, now: float) -> dict[str, Any]:
    return {
        "node": d.owner,
        "manual": d.manual,
        "code": d.code.value,
        "reason": d.reason,
        "failed": d.owner is None and d.code in (ReasonCode.NO_NODE, ReasonCode.THRESHOLD),
        "time": now,
    }


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(k) == new.get(k) for k in ("node", "manual", "code", "reason", "failed"))


class Leader:
    """Runs placement and writes assignments while this node holds the leader key."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.is_leader = False
        self.last_trim = 0.0
        self.elected_at: float | None = None

    def resign(self) -> None:
        self.is_leader = False
        self.elected_at = None

    async def step(self, store: Store, view: ClusterView) -> list[str]:
        self.is_leader = True
        if view.config is None:
            return []
        now = time.time()
        if self.elected_at is None:
            self.elected_at = time.monotonic()
        missing = [n for n in view.node_names() if n not in view.nodes]
        if not view.owner and missing and time.monotonic() - self.elected_at < FORM_WAIT:
            return [f"cluster forming: waiting up to {FORM_WAIT:g} s for "
                    f"{', '.join(missing)} to join before placing"]
        _, _, placement = compute(view, now)
        ops: list[TxnOp] = []
        compares = [Compare.value_is(keys.LEADER, self.node)]
        lines: list[str] = []
        draining = {n for n, r in view.nodes.items() if r.get("draining")}
        new_failures: dict[str, list[dict[str, Any]]] = {}
        for d in placement:
            vs = d.virtual_server
            old, old_rev = view.assign.get(vs, ({}, 0))
            record = assignment_record(d, now)
            if not _same(old, record):
                compares.append(Compare.mod_is(keys.ASSIGN + vs, old_rev))
                ops.append(Put(keys.ASSIGN + vs, json.dumps(record)))
                # Log decisions, not every rewording of a reason.
                if old.get("node") != d.owner or old.get("code") != d.code.value:
                    lines.append(d.line())
            if d.failover is not None and d.failover.node not in draining:
                new_failures.setdefault(vs, []).append(d.failover.to_dict())
            giveup, giveup_rev = view.giveup.get(vs, ({}, 0))
            if giveup and giveup.get("node") != d.owner:
                compares.append(Compare.mod_is(keys.GIVEUP + vs, giveup_rev))
                ops.append(Delete(keys.GIVEUP + vs))
            admin, admin_rev = view.vs_admin.get(vs, ({}, 0))
            if admin.get("move_id") and admin.get("move_done") != admin.get("move_id"):
                answered = dict(admin, move_done=admin["move_id"],
                                move_result=d.refused_move or "")
                compares.append(Compare.mod_is(keys.VS_ADMIN + vs, admin_rev))
                ops.append(Put(keys.VS_ADMIN + vs, json.dumps(answered)))
                if d.refused_move:
                    lines.append(f"{vs}: move refused: {d.refused_move}")
        for vs, records in new_failures.items():
            history, hist_rev = view.failures.get(vs, ([], 0))
            # Keep the history bounded: only the failover period matters to placement.
            kept = [r for r in history if now - float(r.get("time", 0)) < 7 * 86400][-100:]
            compares.append(Compare.mod_is(keys.FAILURES + vs, hist_rev))
            ops.append(Put(keys.FAILURES + vs, json.dumps(kept + records)))
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
