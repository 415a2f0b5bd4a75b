"""Pure logic of a resource group: dependency order, restart windows, group state.

No I/O and no clock: the resource host passes the time in, so every rule here
is deterministic and unit-tested.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from clustermail.cluster.host_protocol import GroupState, ResourceState, VirtualServerSpec


class GroupError(ValueError):
    """A dependency graph that cannot be ordered (unknown dependency, cycle)."""


class DependencyGraph:
    """The resources of a group and their dependencies, in a fixed order.

    The online order is topological; among resources that are ready at the
    same time the one listed first in the spec goes first, so the order is
    deterministic and follows the operator's listing where it can.
    """

    def __init__(self, resources: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._index: dict[str, int] = {}
        for i, (name, _) in enumerate(resources):
            if name in self._index:
                raise GroupError(f"resource {name!r} is listed twice")
            self._index[name] = i
        self._deps: dict[str, tuple[str, ...]] = {}
        self._dependents: dict[str, list[str]] = {name: [] for name in self._index}
        for name, deps in resources:
            for dep in deps:
                if dep == name:
                    raise GroupError(f"resource {name!r} depends on itself")
                if dep not in self._index:
                    raise GroupError(
                        f"resource {name!r} depends on {dep!r}, which is not in the group"
                    )
                self._dependents[dep].append(name)
            self._deps[name] = tuple(dict.fromkeys(deps))
        self._order = self._topological()

    @classmethod
    def from_spec(cls, spec: VirtualServerSpec) -> DependencyGraph:
        return cls([(r.name, r.depends_on) for r in spec.resources])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def dependencies(self, name: str) -> tuple[str, ...]:
        """Direct dependencies, in the order the spec lists them."""
        return self._deps[name]

    def online_order(self) -> list[str]:
        return list(self._order)

    def offline_order(self) -> list[str]:
        return self._order[::-1]

    def sort(self, names: Iterable[str]) -> list[str]:
        """``names`` in online order."""
        wanted = set(names)
        return [n for n in self._order if n in wanted]

    def all_dependents(self, names: Iterable[str]) -> set[str]:
        """Everything that depends on ``names``, directly or not (``names`` excluded)."""
        return self._closure(names, self._dependents) - set(names)

    def all_dependencies(self, names: Iterable[str]) -> set[str]:
        """Everything ``names`` need, directly or not (``names`` excluded)."""
        return self._closure(names, self._deps) - set(names)

    @staticmethod
    def _closure(start: Iterable[str], edges: Mapping[str, Sequence[str]]) -> set[str]:
        seen = set(start)
        todo = list(seen)
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def _topological(self) -> list[str]:
        missing = {name: len(deps) for name, deps in self._deps.items()}
        ready = [(self._index[n], n) for n, count in missing.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for dependent in self._dependents[name]:
                missing[dependent] -= 1
                if missing[dependent] == 0:
                    heapq.heappush(ready, (self._index[dependent], dependent))
        if len(order) < len(self._index):
            raise GroupError(f"dependency cycle: {' -> '.join(self._find_cycle(set(order)))}")
        return order

    def _find_cycle(self, ordered: set[str]) -> list[str]:
        # Every resource left out of the order sits on or behind a cycle: walk
        # dependencies among them until a name repeats.
        start = next(n for n in self._index if n not in ordered)
        path = [start]
        while True:
            nxt = next(d for d in self._deps[path[-1]] if d not in ordered)
            if nxt in path:
                return [*path[path.index(nxt):], nxt]
            path.append(nxt)


# --------------------------------------------------------------------------- restarts


@dataclass(frozen=True, slots=True)
class RestartDecision:
    restart: bool
    #: Failures inside the window, this one included.
    failures: int
    reason: str


class RestartWindow:
    """Restart bookkeeping of one resource: at most ``threshold`` restarts in
    any sliding ``period`` seconds; the failure after that is final.

    ``threshold = 0`` never restarts. Failures older than ``period`` are
    forgotten, so a resource that fails rarely is restarted forever.
    """

    def __init__(self, threshold: int, period: float) -> None:
        if threshold < 0 or period <= 0:
            raise ValueError("threshold must be >= 0 and period > 0")
        self.threshold = threshold
        self.period = period
        self._failures: deque[float] = deque()

    def record_failure(self, now: float) -> RestartDecision:
        self._expire(now)
        self._failures.append(now)
        count = len(self._failures)
        window = f"{self.period:g} s"
        if count <= self.threshold:
            return RestartDecision(
                True, count, f"restart {count} of {self.threshold} within {window}"
            )
        return RestartDecision(
            False,
            count,
            f"restart threshold exceeded: {count} failures within {window} "
            f"(threshold {self.threshold})",
        )

    def failures(self, now: float) -> int:
        self._expire(now)
        return len(self._failures)

    def reset(self) -> None:
        self._failures.clear()

    def _expire(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self.period:
            self._failures.popleft()


# --------------------------------------------------------------------------- group state


def group_state(states: Mapping[str, ResourceState]) -> GroupState:
    """The group's state from its resources' states, as Windows shows it: online
    when every resource is online, offline when none is, partially online
    otherwise (also when an operator took a resource offline on purpose). A
    failed group is the host's call, not derived here."""
    online = sum(state is ResourceState.ONLINE for state in states.values())
    if online == len(states):
        return GroupState.ONLINE
    if online == 0:
        return GroupState.OFFLINE
    return GroupState.PARTIALLY_ONLINE
