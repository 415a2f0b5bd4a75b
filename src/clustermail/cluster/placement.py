"""Placement: one snapshot → the desired owner of every virtual server, with reasons.

A pure function (no I/O, no clock: time is ``snapshot.now``), modelled on
Windows failover clustering. Virtual servers are decided in this order, each
phase in rank order (higher ``priority`` first, then name):

1. set offline by an administrator → no owner;
2. running on an up or paused owner that is still a possible owner → stays
   (stickiness), as long as the node has room;
3. administrator move requests for those → honoured when the target is valid;
4. virtual servers that need a node (owner down, failed on its owner, owner no
   longer valid, or not placed) → the first eligible node in preferred order,
   then the other possible owners by name; left failed when none is eligible,
   when the failover threshold is reached, or when it failed to start the
   same way on a second try (below);
5. failback of the virtual servers still sticking, as their policy allows.

Failed virtual servers are placed before failbacks: availability first.

The cluster's own group (``kind = "cluster"``) is placed the same way but
takes no room on a node: it may share a node in active/passive and never
keeps a virtual server off one.

Move requests reach the snapshot with a target node: the caller resolves a
request for "any other node" first (the leader tries the nodes in preference
order and keeps the first one this function would honour).

Repeated start failures. A virtual server that fails while first coming online
on a node reports what failed (``VsState.failure``, e.g. "smtp: cannot listen on
127.0.0.11:25: address already in use (held by pid 4242: …)"), and the record
of that failover keeps it. When the same start failure comes back on another
try — another node, or the same one again — the cause follows the virtual
server (a stray process holding its port, a missing program, a bad property):
moving it again would fail the same way and only burn its failover threshold.
It is left failed with that reason instead, and identical start failures
count once towards the threshold.

The caller (the leader) applies a :class:`Placement` in one transaction:

* write each decision's ``owner`` and ``manual`` as the assignment (they come
  back as ``VsState.owner``/``VsState.manual`` in the next snapshot);
* append ``Placement.failovers`` to the failure history — one record per
  failure reacted to, except a draining (gracefully stopping) node's; the
  owner changes with it, so the next cycle does not record the same failure
  again;
* answer every move request of the snapshot: the request stays in the
  virtual server's admin record and is marked done, with
  ``Decision.refused_move`` as its result (empty when honoured), which is what
  `clustermail vs move` waits for;
* log a decision's line when its owner or reason code changed, and every
  refused move.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from clustermail.cluster.model import ClusterConfig, FailbackMode, VirtualServer
from clustermail.cluster.snapshot import (
    FailoverRecord,
    NodeStatus,
    Snapshot,
    VsState,
    VsStatus,
)


class ReasonCode(enum.StrEnum):
    STAY = "stay"  # keeps its owner
    START = "start"  # had no owner; starts on a node
    FAILOVER = "failover"  # its owner is down or it failed there; moves to a standby
    RELOCATE = "relocate"  # its owner is no longer valid (not a node, not possible, full)
    MOVE = "move"  # an administrator's move request, honoured
    FAILBACK = "failback"  # returns to a more preferred owner, per its failback policy
    OFFLINE = "offline"  # set offline by an administrator
    NO_NODE = "no-node"  # no eligible node: left failed, or not started
    THRESHOLD = "threshold"  # left failed: failover threshold reached in its period
    REPEATED = "repeated"  # left failed: the same start failure came back on a second try


@dataclass(frozen=True, slots=True)
class Candidate:
    """One node as placement saw it for one virtual server (for ``explain``)."""

    node: str
    rank: str  # "preferred #1", "possible owner" or "not a possible owner"
    verdict: str  # "chosen", "keeps it", or why it was not chosen
    chosen: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    virtual_server: str
    owner: str | None  # desired owner; None: no node runs it
    code: ReasonCode
    reason: str  # one line for operators, e.g. "stays on node1: running and node1 is up"
    previous_owner: str | None
    manual: bool  # store as VsState.manual: the owner was chosen by an administrator
    refused_move: str | None = None  # why a move request was refused, if one was
    failover: FailoverRecord | None = None  # the failure this decision reacts to
    candidates: tuple[Candidate, ...] = ()

    @property
    def moved(self) -> bool:
        return self.owner != self.previous_owner

    def line(self) -> str:
        return f"{self.virtual_server}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Placement:
    decisions: tuple[Decision, ...]  # one per virtual server, by name

    def __getitem__(self, vs: str) -> Decision:
        for d in self.decisions:
            if d.virtual_server == vs:
                return d
        raise KeyError(vs)

    def __iter__(self) -> Iterator[Decision]:
        return iter(self.decisions)

    def owners(self) -> dict[str, str | None]:
        return {d.virtual_server: d.owner for d in self.decisions}

    @property
    def failovers(self) -> tuple[FailoverRecord, ...]:
        """Records for the caller to append to the failure history with the assignments."""
        return tuple(d.failover for d in self.decisions if d.failover is not None)

    def changes(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.moved)

    def lines(self) -> list[str]:
        return [d.line() for d in self.decisions]


class UnknownVirtualServer(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"{name!r} is not a virtual server of this cluster "
            f"(virtual servers: {', '.join(known) or 'none'})"
        )


class _Situation(enum.Enum):
    OFFLINE = enum.auto()  # set offline by an administrator
    KEEP = enum.auto()  # may stay where it is
    FAILURE = enum.auto()  # owner down or failed there: a failover, counted
    RELOCATE = enum.auto()  # owner no longer valid: a move, not counted
    UNPLACED = enum.auto()  # no owner


class _Arrival(enum.Enum):
    REQUESTED = enum.auto()
    PLACED = enum.auto()
    FAILBACK = enum.auto()


@dataclass
class _Case:
    """Working state of one virtual server during one run."""

    vs: VirtualServer
    state: VsState
    situation: _Situation
    cause: str = ""  # why it needs a node, e.g. "owner node3 is down"
    failed_on: str | None = None  # excluded from its candidates, and recorded
    failure: str = ""  # the start failure that failed it on failed_on, if it was one
    request: str | None = None  # move request target
    refused: str | None = None
    note: str = ""  # appended to a stay reason
    decision: Decision | None = None

    @property
    def name(self) -> str:
        return self.vs.name


def _rank_key(vs: VirtualServer) -> tuple[int, str]:
    return (-vs.priority, vs.name)


def _precedence(winner: VirtualServer, loser: VirtualServer) -> str:
    if winner.priority != loser.priority:
        return f"priority {winner.priority} > {loser.priority}"
    return f"same priority, {winner.name} sorts before {loser.name}"


def _short(predicate: str) -> str:
    """ "is down" → "down", for lists such as "(node3 down, node4 hosts mail3)"."""
    return predicate.removeprefix("is ")


def _hours(value: float) -> str:
    return f"{value:g} h"


def _tries(nodes: list[str]) -> str:
    """Where the tries were: "node1 and node4", "node1 twice", "node1, node4 and node1"."""
    if len(set(nodes)) == 1:
        return f"{nodes[0]} twice" if len(nodes) == 2 else f"{nodes[0]} {len(nodes)} times"
    return ", ".join(nodes[:-1]) + f" and {nodes[-1]}"


class _Run:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snap = snapshot
        self.config: ClusterConfig = snapshot.config
        self.nodes = set(self.config.node_names)
        self.load: dict[str, list[str]] = {n: [] for n in sorted(self.nodes)}
        self.arrivals: dict[str, _Arrival] = {}  # virtual servers given a new node this run
        self.cases = [self._classify(vs) for vs in sorted(self.config.virtual_servers,
                                                           key=_rank_key)]
        self.by_name = {c.name: c for c in self.cases}

    # ------------------------------------------------------------------ facts

    def _classify(self, vs: VirtualServer) -> _Case:
        state = self.snap.state(vs.name)
        case = _Case(vs, state, _Situation.KEEP, request=self.snap.move_requests.get(vs.name))
        owner = state.owner
        if vs.name in self.snap.offline:
            case.situation = _Situation.OFFLINE
        elif owner is None:
            case.situation = _Situation.UNPLACED
        elif owner not in self.nodes:
            case.situation, case.cause = _Situation.RELOCATE, f"{owner} is not a cluster node"
        elif (status := self.snap.nodes.get(owner)) in (None, NodeStatus.DOWN):
            case.situation, case.failed_on = _Situation.FAILURE, owner
            suffix = "" if status is NodeStatus.DOWN else " (no status reported)"
            case.cause = f"owner {owner} is down{suffix}"
        elif state.status is VsStatus.FAILED:
            case.situation, case.failed_on = _Situation.FAILURE, owner
            case.failure = state.failure
            # What failed, when the owner said (a start failure): "why did it move?"
            what = f" ({state.failure})" if state.failure else ""
            case.cause = f"it failed on {owner}{what}"
        elif owner not in self.config.possible_owners(vs):
            case.situation, case.cause = _Situation.RELOCATE, f"{owner} is not a possible owner"
        return case

    def failover_records(self, vs: VirtualServer) -> list[FailoverRecord]:
        """Failovers within the period, without those an administrator cleared."""
        since = self.snap.now - vs.failover_period_hours * 3600
        cleared = self.snap.failures_cleared.get(vs.name)
        return [
            r
            for r in self.snap.failovers
            if r.virtual_server == vs.name
            and r.time > since
            and (cleared is None or r.time > cleared)
        ]

    def failover_count(self, vs: VirtualServer) -> int:
        """Failovers within the period; identical start failures count once."""
        records = self.failover_records(vs)
        return sum(1 for r in records if not r.failure) + len({r.failure for r in records
                                                               if r.failure})

    def order(self, vs: VirtualServer) -> list[tuple[str, str]]:
        """Nodes in the order they are tried: preferred, other possible owners, the rest."""
        out = [(n, f"preferred #{i}") for i, n in enumerate(vs.preferred_owners, 1)
               if n in self.nodes]
        seen = {n for n, _ in out}
        possible = set(self.config.possible_owners(vs))
        out += [(n, "possible owner") for n in sorted(possible & self.nodes - seen)]
        out += [(n, "not a possible owner") for n in sorted(self.nodes - possible - seen)]
        return out

    def rejection(self, case: _Case, node: str) -> str | None:
        """Why ``node`` cannot take ``case`` now (a predicate: "is down"), or None."""
        if node not in self.nodes:
            return "is not a cluster node"
        if node not in self.config.possible_owners(case.vs):
            return "is not a possible owner"
        if node == case.failed_on:
            return "is the node it failed on"
        status = self.snap.nodes.get(node)
        if status is None:
            return "is down (no status reported)"
        if status is NodeStatus.DOWN:
            return "is down"
        if status is NodeStatus.PAUSED:
            return "is paused (takes no new virtual servers)"
        return self.full(case, node)

    def full(self, case: _Case, node: str) -> str | None:
        if not case.vs.takes_room:
            return None  # the cluster's own group shares any node
        others = [v for v in self.load[node] if v != case.name]
        capacity = self.config.capacity_of(node)
        if len(others) < capacity:
            return None
        newcomers = [v for v in others if v in self.arrivals]
        if capacity == 1:
            if newcomers:
                return f"is taken by {newcomers[-1]}, {self.arrival_note(newcomers[-1], case)}"
            return f"hosts {others[0]}"
        full = f"is full: it hosts {', '.join(others)} (capacity {capacity})"
        if newcomers:
            last = newcomers[-1]
            full += f", the last taken by {last}, {self.arrival_note(last, case)}"
        return full

    def candidates(self, case: _Case, chosen: str | None, chosen_verdict: str,
                   other_verdict: str) -> tuple[Candidate, ...]:
        out = []
        for node, rank in self.order(case.vs):
            if node == chosen:
                out.append(Candidate(node, rank, chosen_verdict, True))
            else:
                why = self.rejection(case, node)
                out.append(Candidate(node, rank, _short(why) if why else other_verdict))
        return tuple(out)

    # ------------------------------------------------------------------ outcomes

    def decide(self, case: _Case, owner: str | None, code: ReasonCode, reason: str,
               candidates: tuple[Candidate, ...] = ()) -> None:
        if case.refused:
            reason += f"; {case.refused}"
        record = None
        if case.situation is _Situation.FAILURE and case.failed_on is not None:
            record = FailoverRecord(case.name, self.snap.now, case.failed_on, case.failure)
        manual = code is ReasonCode.MOVE or (code is ReasonCode.STAY and case.state.manual)
        case.decision = Decision(
            virtual_server=case.name,
            owner=owner,
            code=code,
            reason=reason,
            previous_owner=case.state.owner,
            manual=manual,
            refused_move=case.refused,
            failover=record,
            candidates=candidates,
        )

    def occupy(self, case: _Case, node: str, how: _Arrival) -> None:
        owner = case.state.owner
        if owner in self.load and case.name in self.load[owner]:
            self.load[owner].remove(case.name)
        if case.vs.takes_room:
            self.load[node].append(case.name)
        self.arrivals[case.name] = how

    def arrival_note(self, winner: str, loser: _Case) -> str:
        """Tells a virtual server why another one got the node it wanted."""
        how = self.arrivals[winner]
        if how is _Arrival.REQUESTED:
            return "moving there at an administrator's request"
        if how is _Arrival.FAILBACK:
            return "failing back there"
        if loser.situation is _Situation.KEEP:
            return "which needed a node"
        return f"which goes first ({_precedence(self.by_name[winner].vs, loser.vs)})"

    def pending(self, *situations: _Situation) -> list[_Case]:
        return [c for c in self.cases if c.decision is None and c.situation in situations]

    # ------------------------------------------------------------------ phases

    def run(self) -> Placement:
        self.admin_offline()
        self.keep()
        self.requested_moves()
        self.place_unowned()
        self.failback()
        decisions = [c.decision for c in self.cases if c.decision is not None]
        return Placement(tuple(sorted(decisions, key=lambda d: d.virtual_server)))

    def admin_offline(self) -> None:
        for case in self.pending(_Situation.OFFLINE):
            if case.request:
                case.refused = f"move to {case.request} ignored: it is offline"
            cands = self.candidates(case, None, "", "not considered: it is offline")
            self.decide(case, None, ReasonCode.OFFLINE, "offline: set offline by an administrator",
                        cands)

    def keep(self) -> None:
        for case in self.pending(_Situation.KEEP):
            owner = case.state.owner
            assert owner is not None
            if not case.vs.takes_room:
                continue
            if len(self.load[owner]) < self.config.capacity_of(owner):
                self.load[owner].append(case.name)
                continue
            keepers = self.load[owner]
            case.situation = _Situation.RELOCATE
            case.cause = (f"{owner} has room for {self.config.capacity_of(owner)} and "
                          f"{', '.join(keepers)} rank{'s' if len(keepers) == 1 else ''} first")

    def requested_moves(self) -> None:
        for case in self.pending(_Situation.KEEP):
            target = case.request
            if target is None:
                continue
            if target == case.state.owner:
                case.note = f"; already on {target}, the requested node"
                continue
            why = self.rejection(case, target)
            if why is not None:
                case.refused = f"move to {target} refused: {target} {why}"
                continue
            self.occupy(case, target, _Arrival.REQUESTED)
            cands = self.candidates(case, target, "chosen by an administrator", "not requested")
            self.decide(case, target, ReasonCode.MOVE,
                        f"moves to {target}: requested by an administrator", cands)

    def place_unowned(self) -> None:
        for case in self.pending(_Situation.FAILURE, _Situation.RELOCATE, _Situation.UNPLACED):
            if self.repeated_failure(case) or self.threshold_reached(case):
                continue
            if case.request is not None and self.honour_request(case):
                continue
            chosen = next((n for n, _ in self.order(case.vs)
                           if self.rejection(case, n) is None), None)
            cands = self.candidates(case, chosen, "chosen",
                                    "available, but an earlier node was chosen")
            if chosen is None:
                self.decide(case, None, ReasonCode.NO_NODE, self.no_node_reason(case, cands),
                            cands)
                continue
            self.occupy(case, chosen, _Arrival.PLACED)
            self.decide(case, chosen, *self.placed_reason(case, chosen), cands)

    def threshold_reached(self, case: _Case) -> bool:
        if case.situation is _Situation.RELOCATE:
            return False  # not a failure of the virtual server
        count = self.failover_count(case.vs)
        threshold = self.config.failover_threshold(case.vs)
        # A failover needs room under the threshold; a start is blocked only by failures.
        limit = threshold if case.situation is _Situation.FAILURE else max(threshold, 1)
        if count < limit:
            return False
        if case.request:
            case.refused = f"move to {case.request} refused: it is past its failover threshold"
        plural = "" if count == 1 else "s"
        # The failure that reached it, or the last one recorded: if it was a start
        # failure, what failed is the first thing an operator needs.
        if case.situation is _Situation.FAILURE:
            latest = FailoverRecord(case.name, self.snap.now, case.failed_on or "?", case.failure)
        else:
            records = self.failover_records(case.vs)
            latest = records[-1] if records else FailoverRecord(case.name, 0.0, "?")
        last = (f" (the last: it failed on {latest.node} ({latest.failure}))"
                if latest.failure else "")
        reason = (f"left failed: {count} failover{plural} in "
                  f"{_hours(case.vs.failover_period_hours)} reached the threshold {threshold}"
                  f"{last}; clear with `clustermail vs clear-failures {case.name}`")
        self.decide(case, None, ReasonCode.THRESHOLD, reason,
                    self.candidates(case, None, "", "not considered: past the threshold"))
        return True

    def repeated_failure(self, case: _Case) -> bool:
        """Leaves ``case`` failed when its start failure came back on a second try (see
        the module docstring): now, or earlier and not cleared since."""
        records = self.failover_records(case.vs)
        if case.situation is _Situation.FAILURE and case.failure:
            failure = case.failure
            nodes = [r.node for r in records if r.failure == failure]
            if not nodes:
                return False  # the first time: it may belong to that node
            nodes.append(case.failed_on or "?")
        elif case.situation is _Situation.UNPLACED and case.state.status is VsStatus.FAILED:
            # Left failed earlier: it stays so while a repeat is in its history.
            failures = [r.failure for r in records if r.failure]
            repeated = [f for i, f in enumerate(failures) if f in failures[:i]]
            if not repeated:
                return False
            failure = repeated[-1]
            nodes = [r.node for r in records if r.failure == failure]
        else:
            return False
        if case.request:
            case.refused = (f"move to {case.request} refused: its start failure repeats; "
                            f"clear its failures first")
        reason = (f"left failed: the same start failure on {_tries(nodes)}: {failure}; "
                  "moving it again would not help: remove the cause, then "
                  f"`clustermail vs clear-failures {case.name}`")
        self.decide(case, None, ReasonCode.REPEATED, reason,
                    self.candidates(case, None, "", "not considered: its start failure repeats"))
        return True

    def honour_request(self, case: _Case) -> bool:
        target = case.request
        assert target is not None
        why = self.rejection(case, target)
        if why is not None:
            case.refused = f"move to {target} refused: {target} {why}"
            return False
        self.occupy(case, target, _Arrival.REQUESTED)
        verb = "starts on" if case.situation is _Situation.UNPLACED else "moves to"
        cause = f"; {case.cause}" if case.cause else ""
        cands = self.candidates(case, target, "chosen by an administrator", "not requested")
        self.decide(case, target, ReasonCode.MOVE,
                    f"{verb} {target}: requested by an administrator{cause}", cands)
        return True

    def placed_reason(self, case: _Case, node: str) -> tuple[ReasonCode, str]:
        if node in case.vs.preferred_owners:
            which = ("the first standby in its preferred order"
                     if case.situation is not _Situation.UNPLACED
                     else "the first available node in its preferred order")
        elif case.vs.preferred_owners:
            which = "the first available possible owner (no preferred owner is available)"
        else:
            which = "the first available possible owner by name"
        if case.situation is _Situation.UNPLACED:
            return ReasonCode.START, f"starts on {node}: {node} is {which}"
        code = (ReasonCode.FAILOVER if case.situation is _Situation.FAILURE
                else ReasonCode.RELOCATE)
        return code, f"moves to {node}: {case.cause}; {node} is {which}"

    def no_node_reason(self, case: _Case, cands: tuple[Candidate, ...]) -> str:
        listed = [f"{c.node} {c.verdict}" for c in cands
                  if c.rank != "not a possible owner" and c.node != case.failed_on]
        detail = f" ({', '.join(listed)})" if listed else " (it has no other possible owner)"
        if case.situation is _Situation.FAILURE:
            return f"left failed: no standby node{detail}; {case.cause}"
        if case.situation is _Situation.RELOCATE:
            return f"stopped: {case.cause} and no other node can host it{detail}"
        if case.state.status is VsStatus.FAILED:
            return f"left failed: no standby node{detail}"
        return f"stays offline: no available node{detail}"

    def failback(self) -> None:
        hour = self.snap.local_hour
        for case in self.pending(_Situation.KEEP):
            owner = case.state.owner
            assert owner is not None
            preferred = case.vs.preferred_owners
            above = list(preferred[: preferred.index(owner)] if owner in preferred else preferred)
            target = next((n for n in above if self.rejection(case, n) is None), None)
            policy = case.vs.failback
            allowed = (policy.is_open(hour) and not case.state.manual
                       and case.state.status is VsStatus.ONLINE)
            if target is not None and allowed:
                self.occupy(case, target, _Arrival.FAILBACK)
                first = "its preferred owner" if target == preferred[0] else (
                    f"before {owner} in its preferred order")
                when = ("failback is immediate" if policy.mode is FailbackMode.IMMEDIATE
                        else f"the failback window {policy.describe()} is open")
                cands = self.candidates(case, target, "chosen (failback)", "not needed")
                self.decide(case, target, ReasonCode.FAILBACK,
                            f"moves to {target} (failback): {target} is {first} and {when}",
                            cands)
                continue
            self.stay(case, owner, above, target, hour)

    def stay(self, case: _Case, owner: str, above: list[str], target: str | None,
             hour: int) -> None:
        status = self.snap.nodes.get(owner)
        if case.state.status is VsStatus.ONLINE:
            reason = (f"stays on {owner}: running and {owner} is up"
                      if status is NodeStatus.UP else
                      f"stays on {owner}: running; {owner} is paused, which keeps what it runs")
        else:
            reason = (f"stays on {owner}: assigned to {owner} ({case.state.status.value}), "
                      f"which is {status.value if status else 'up'}")
        reason += case.note or self.failback_note(case, above, target, hour)
        cands = self.candidates(case, owner, "keeps it",
                                "available, but a virtual server is not moved without cause")
        self.decide(case, owner, ReasonCode.STAY, reason, cands)

    def failback_note(self, case: _Case, above: list[str], target: str | None,
                      hour: int) -> str:
        policy = case.vs.failback
        if target is not None:
            if case.state.manual:
                return f"; an administrator moved it here, so it does not fail back to {target}"
            if policy.mode is FailbackMode.NEVER:
                return f"; failback is never, so it does not return to {target}"
            if not policy.is_open(hour):
                return (f"; {target} is preferred but the failback window "
                        f"{policy.describe()} is closed")
            return f"; it fails back to {target} once online"
        if above and policy.mode is not FailbackMode.NEVER and not case.state.manual:
            why = self.rejection(case, above[0])
            return f"; no failback: {above[0]} {why}"
        return ""


def place(snapshot: Snapshot) -> Placement:
    """The desired owner of every configured virtual server, each with a reason."""
    return _Run(snapshot).run()


#: Start failures from the failover history that ``explain`` shows, the last ones.
EXPLAIN_START_FAILURES = 3


def explain(snapshot: Snapshot, vs_name: str) -> str:
    """Why ``vs_name`` runs where it runs (or why not), candidate by candidate."""
    config = snapshot.config
    vs = config.virtual_server(vs_name)
    if vs is None:
        raise UnknownVirtualServer(vs_name, sorted(v.name for v in config.virtual_servers))
    run = _Run(snapshot)
    decision = run.run()[vs_name]
    state = snapshot.state(vs_name)
    where = decision.owner or "no node"
    lines = [f"{vs_name}: {where} [{decision.code.value}]", f"  {decision.reason}"]
    if state.owner is None:
        lines.append(f"  before: no owner, status {state.status.value}")
    else:
        node_status = snapshot.nodes.get(state.owner)
        shown = node_status.value if node_status else "no status"
        manual = ", placed by an administrator" if state.manual else ""
        lines.append(f"  before: on {state.owner} ({shown}), status {state.status.value}{manual}")
    possible = ("every node" if vs.possible_owners is None
                else ", ".join(vs.possible_owners))
    lines.append(f"  policy: priority {vs.priority}; preferred owners "
                 f"{', '.join(vs.preferred_owners) or 'none'}; possible owners {possible}; "
                 f"failback {vs.failback.describe()}"
                 + (f" (local hour now {snapshot.local_hour:02d})"
                    if vs.failback.mode is FailbackMode.WINDOW else ""))
    threshold = config.failover_threshold(vs)
    default = " (default: nodes - 1)" if vs.failover_threshold is None else ""
    cleared = snapshot.failures_cleared.get(vs_name)
    cleared_note = f"; failures cleared at {cleared:g}" if cleared is not None else ""
    counted, recorded = run.failover_count(vs), len(run.failover_records(vs))
    once = (f" ({recorded} recorded: identical start failures count once)"
            if recorded != counted else "")
    lines.append(f"  failovers: {counted} in the last "
                 f"{_hours(vs.failover_period_hours)}{once}, threshold {threshold}{default}"
                 f"{cleared_note}")
    # What failed, for the failovers that were start failures (the last few).
    started = [r for r in run.failover_records(vs) if r.failure][-EXPLAIN_START_FAILURES:]
    lines.extend(f"  start failure on {r.node}: {r.failure}" for r in started)
    if decision.failover is not None:
        what = f" ({decision.failover.failure})" if decision.failover.failure else ""
        lines.append(f"  records a failover: {vs_name} failed on {decision.failover.node}{what}")
    request = snapshot.move_requests.get(vs_name)
    if request is not None:
        outcome = decision.refused_move or (
            "honoured" if decision.code is ReasonCode.MOVE else "nothing to do")
        lines.append(f"  move request: to {request}: {outcome}")
    lines.append("  candidates, in the order tried:")
    width = max((len(c.node) for c in decision.candidates), default=0)
    for c in decision.candidates:
        mark = "*" if c.chosen else "-"
        lines.append(f"    {mark} {c.node:<{width}}  {c.rank:<20}  {c.verdict}")
    return "\n".join(lines)
