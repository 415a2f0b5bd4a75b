"""`clustermail validate`: checks, verdicts, clock skew and the report (pure: no I/O).

Every check says ``pass``, ``warn`` or ``fail``. A report's verdict is its worst check;
the command's exit code follows it: 0 every check passed, 1 at least one failed,
3 none failed but at least one warned (2 is the CLI's usage error).

Clock skew across the cluster (``validate --cluster``): the asker notes its wall clock
when it writes a node's request (``sent``) and when it sees the node's claim (``seen``);
the node wrote its own wall clock into the claim (``node_time``). So the node's clock
read ``node_time`` at some instant between ``sent`` and ``seen`` of the asker's clock:
its offset is ``node_time - (sent + seen) / 2``, give or take half the round trip. Nodes
are compared with each other, not with the asker (a workstation's clock does not
matter): each node's skew is its offset minus the median offset of the nodes, and its
verdict goes by what the skew is at least (the skew less the node's uncertainty):
warn over :data:`SKEW_WARN`, fail over :data:`SKEW_FAIL`. Lease deadlines are measured on
each node's monotonic clock, so skew does not break ownership; it breaks the order of
logs, audit trails and message dates, and a skew that big means time sync is off.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: The node request's operation name (node run hands its agent the handler).
OP = "validate"
PASS, WARN, FAIL = "pass", "warn", "fail"
RESULTS = (PASS, WARN, FAIL)
#: Clock skew between nodes (s): more is a warning, then a failure.
SKEW_WARN, SKEW_FAIL = 0.5, 2.0
EXIT_CODES = {PASS: 0, FAIL: 1, WARN: 3}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    result: str  # "pass" | "warn" | "fail"
    detail: str


def worst(results: Iterable[str]) -> str:
    found = set(results)
    return FAIL if FAIL in found else WARN if WARN in found else PASS


def verdict(checks: Iterable[Check]) -> str:
    return worst(c.result for c in checks)


def exit_code(result: str) -> int:
    return EXIT_CODES[result]


def checks_from_json(data: Any) -> list[Check]:
    """A node's answer back into checks; raises ValueError for anything else."""
    if not isinstance(data, list):
        raise ValueError("checks is not a list")
    out = []
    for item in data:
        if not isinstance(item, dict):
            raise ValueError("a check is not an object")
        result = item.get("result")
        if result not in RESULTS:
            raise ValueError(f"a check has the result {result!r}")
        out.append(Check(str(item.get("name", "?")), str(result), str(item.get("detail", ""))))
    return out


def as_json(checks: Iterable[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]


# --------------------------------------------------------------------------- clock skew


@dataclass(frozen=True, slots=True)
class ClockSample:
    """When the asker sent a node's request and saw its claim (asker's wall clock), and
    the node's wall clock at the claim."""

    node: str
    sent: float
    seen: float
    node_time: float

    @property
    def offset(self) -> float:
        return self.node_time - (self.sent + self.seen) / 2

    @property
    def uncertainty(self) -> float:
        return max(0.0, self.seen - self.sent) / 2


def skew_checks(samples: Sequence[ClockSample]) -> dict[str, Check]:
    """One ``clock`` check per node: its skew against the median of the nodes."""
    if not samples:
        return {}
    if len(samples) == 1:
        only = samples[0]
        return {only.node: Check("clock", PASS, "the only node that answered: nothing to "
                                 f"compare (offset to this machine {only.offset:+.3f} s)")}
    median = statistics.median(s.offset for s in samples)
    out = {}
    for s in samples:
        skew = s.offset - median
        at_least = max(0.0, abs(skew) - s.uncertainty)
        result = FAIL if at_least > SKEW_FAIL else WARN if at_least > SKEW_WARN else PASS
        detail = f"skew {skew:+.3f} s ±{s.uncertainty:.3f} s against the nodes' median"
        if result != PASS:
            detail += (f" (over {SKEW_FAIL if result == FAIL else SKEW_WARN:g} s: check time "
                       "sync, e.g. `chronyc tracking`)")
        out[s.node] = Check("clock", result, detail)
    return out


def spread_check(samples: Sequence[ClockSample]) -> Check | None:
    """The cluster-wide line: the largest difference between two nodes' clocks."""
    if len(samples) < 2:
        return None
    low = min(samples, key=lambda s: s.offset)
    high = max(samples, key=lambda s: s.offset)
    spread = high.offset - low.offset
    slack = low.uncertainty + high.uncertainty
    at_least = max(0.0, spread - slack)
    result = FAIL if at_least > SKEW_FAIL else WARN if at_least > SKEW_WARN else PASS
    return Check("clock skew", result, f"{spread:.3f} s ±{slack:.3f} s between {high.node} and "
                 f"{low.node} (warn over {SKEW_WARN:g} s, fail over {SKEW_FAIL:g} s)")


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class NodeReport:
    node: str
    #: False: the node did not answer (its one check says why).
    answered: bool
    checks: tuple[Check, ...]
    #: From writing the request to seeing its result (s).
    round_trip: float | None = None
    clock: ClockSample | None = None

    @property
    def verdict(self) -> str:
        return verdict(self.checks)


@dataclass(frozen=True, slots=True)
class ClusterReport:
    #: What the asker checked itself: the store, the configuration, the skew spread.
    checks: tuple[Check, ...]
    nodes: tuple[NodeReport, ...] = field(default=())

    @property
    def verdict(self) -> str:
        return worst([verdict(self.checks), *(n.verdict for n in self.nodes)])

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": exit_code(self.verdict),
            "checks": as_json(self.checks),
            "nodes": [{
                "node": n.node, "answered": n.answered, "verdict": n.verdict,
                "round_trip": None if n.round_trip is None else round(n.round_trip, 4),
                "clock_offset": None if n.clock is None else round(n.clock.offset, 4),
                "clock_uncertainty": None if n.clock is None else round(
                    n.clock.uncertainty, 4),
                "checks": as_json(n.checks),
            } for n in self.nodes],
        }


def node_report(node: str, answer: Mapping[str, Any] | None, *, error: str = "",
                sample: ClockSample | None = None,
                round_trip: float | None = None) -> NodeReport:
    """A node's part of the report from its answer (None: ``error`` says why there is
    none); an answer that cannot be read is a failure, never a crash."""
    if answer is None:
        return NodeReport(node, False, (Check("answer", FAIL, error),), round_trip)
    try:
        checks = checks_from_json(answer.get("checks"))
    except ValueError as exc:
        return NodeReport(node, False, (Check("answer", FAIL, f"unreadable answer: {exc}"),),
                          round_trip)
    took = "" if round_trip is None else f" in {round_trip:.2f} s"
    return NodeReport(node, True, (Check("answer", PASS, f"answered{took}"), *checks),
                      round_trip, sample)


def with_clocks(reports: Sequence[NodeReport], samples: Sequence[ClockSample]) -> tuple[
        list[NodeReport], Check | None]:
    """Adds each answering node's ``clock`` check (after its ``answer`` line)."""
    by_node = skew_checks(samples)
    out = []
    for r in reports:
        clock = by_node.get(r.node)
        if clock is None or not r.answered:
            out.append(r)
            continue
        out.append(NodeReport(r.node, r.answered, (*r.checks[:1], clock, *r.checks[1:]),
                              r.round_trip, r.clock))
    return out, spread_check(samples)


def rows(report: ClusterReport) -> list[tuple[str, str, str, str]]:
    """(where, check, result, detail) lines, the cluster's own first."""
    out = [("cluster", c.name, c.result, c.detail) for c in report.checks]
    for n in report.nodes:
        out.extend((n.node, c.name, c.result, c.detail) for c in n.checks)
    return out


def summary(report: ClusterReport) -> str:
    counts = {r: 0 for r in RESULTS}
    for _, _, result, _ in rows(report):
        counts[result] += 1
    answered = sum(1 for n in report.nodes if n.answered)
    return (f"{report.verdict.upper()}: {answered} of {len(report.nodes)} node(s) answered; "
            f"{counts[PASS]} passed, {counts[WARN]} warned, {counts[FAIL]} failed")


__all__ = [
    "EXIT_CODES", "FAIL", "PASS", "SKEW_FAIL", "SKEW_WARN", "WARN", "Check", "ClockSample",
    "ClusterReport", "NodeReport", "as_json", "checks_from_json", "exit_code", "node_report",
    "rows", "skew_checks", "spread_check", "summary", "verdict", "with_clocks", "worst",
]
