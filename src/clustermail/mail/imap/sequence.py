"""Sequence sets (RFC 3501 §9 ``sequence-set``), as used for message numbers and UIDs.

A set is an ordered tuple of ranges; ``None`` stands for ``*``, the largest
number in use, which is only known when the set is resolved against a
mailbox. ``n:m`` and ``m:n`` are the same range, and ``n:*`` includes the
largest number even when ``n`` is larger than it (RFC 3501 §6.4.8).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from clustermail.mail.imap.errors import ImapProtocolError

#: One endpoint of a range: a positive 32-bit number, or ``None`` for ``*``.
Bound = int | None

_MAX_NUMBER = 0xFFFFFFFF
_SET_RE = re.compile(rb"(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?(?:,(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?)*")


class SequenceSetError(ImapProtocolError, ValueError):
    """Text that is not a valid sequence set."""


@dataclass(frozen=True, slots=True)
class SequenceRange:
    """``start:end`` as written; ``end == start`` for a single number."""

    start: Bound
    end: Bound

    def bounds(self, largest: int) -> tuple[int, int]:
        """The ordered inclusive bounds once ``*`` means ``largest``."""
        a = largest if self.start is None else self.start
        b = largest if self.end is None else self.end
        return (a, b) if a <= b else (b, a)

    def __str__(self) -> str:
        a = "*" if self.start is None else str(self.start)
        if self.start == self.end:
            return a
        b = "*" if self.end is None else str(self.end)
        return f"{a}:{b}"


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A non-empty list of ranges, in the client's order."""

    ranges: tuple[SequenceRange, ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise SequenceSetError("a sequence set needs at least one number")

    # ------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, text: str | bytes) -> SequenceSet:
        """Parse ``1,3:5,7:*``; :class:`SequenceSetError` when invalid (0 is invalid)."""
        raw = text.encode("ascii", "replace") if isinstance(text, str) else text
        if not _SET_RE.fullmatch(raw):
            raise SequenceSetError(f"invalid sequence set {_show(raw)}")
        ranges: list[SequenceRange] = []
        for part in raw.split(b","):
            first, _, second = part.partition(b":")
            start = _bound(first)
            end = _bound(second) if second else start
            ranges.append(SequenceRange(start, end))
        return cls(tuple(ranges))

    @classmethod
    def single(cls, number: int) -> SequenceSet:
        return cls((SequenceRange(number, number),))

    @classmethod
    def compress(cls, numbers: Iterable[int]) -> SequenceSet:
        """The shortest set listing ``numbers`` in the given order.

        Consecutive ascending runs become ranges; the order is kept because a
        COPYUID response pairs its source and destination sets element by
        element (RFC 4315 §3).
        """
        ranges: list[SequenceRange] = []
        start = prev = -1
        for n in numbers:
            if n < 1:
                raise SequenceSetError(f"{n} is not a valid message number or UID")
            if prev >= 0 and n == prev + 1:
                prev = n
                continue
            if prev >= 0:
                ranges.append(SequenceRange(start, prev))
            start = prev = n
        if prev < 0:
            raise SequenceSetError("cannot compress an empty list of numbers")
        ranges.append(SequenceRange(start, prev))
        return cls(tuple(ranges))

    # ---------------------------------------------------------------- querying

    @property
    def uses_star(self) -> bool:
        return any(r.start is None or r.end is None for r in self.ranges)

    def contains(self, number: int, largest: int) -> bool:
        """Whether ``number`` is in the set when ``*`` means ``largest``."""
        for r in self.ranges:
            a, b = r.bounds(largest)
            if a <= number <= b:
                return True
        return False

    def intervals(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged inclusive intervals when ``*`` means ``largest``."""
        spans = sorted(r.bounds(largest) for r in self.ranges)
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def iter_numbers(self, largest: int) -> Iterator[int]:
        """Each number of the set once, ascending, clipped to ``1..largest``.

        For message sequence numbers: numbers above the mailbox size do not
        exist (the server decides whether that is an error before asking).
        """
        for a, b in self.intervals(largest):
            yield from range(max(a, 1), min(b, largest) + 1)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def _bound(raw: bytes) -> Bound:
    if raw == b"*":
        return None
    if len(raw) > 10 or raw[0:1] == b"0":
        raise SequenceSetError(f"invalid number {_show(raw)} in sequence set")
    n = int(raw)
    if n > _MAX_NUMBER:
        raise SequenceSetError(f"number {n} in sequence set is larger than 4294967295")
    return n


def _show(raw: bytes) -> str:
    text = raw[:40].decode("ascii", "replace")
    return repr(text + ("..." if len(raw) > 40 else ""))
