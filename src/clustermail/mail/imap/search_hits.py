"""The number list of a flag-only SEARCH (UNSEEN, DELETED, ALL…), built from a bit mask
without a Python step per message.

A flag SEARCH over a big mailbox answers with thousands of numbers; picking them one
by one and formatting each took ~0.5 ms per 10,000 messages, a fifth of the event
loop's time in bench.imap's mixed workload. Here the rendered list of *all* the
view's numbers (`` 1 2 3 …``, kept for as long as the numbers are the same, and
extended when messages were only added) is masked instead: numbers of the same
digit count are contiguous in an ascending list, so each run of them is a
fixed-width stretch of the rendering, and the mask repeats each message's hit byte
over its number's width with a few strided copies. One integer AND then blanks the
misses (to NUL bytes, removed in one pass). All of it runs in C.

Pure: no I/O. The cache is the process's (a lock keeps it whole under threads).
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from itertools import compress

from clustermail.mail.imap import response as r

#: Renderings kept (one per distinct number list: a mailbox's sessions share one) and
#: their total size with their keys; a list too big for the budget (~2 million UIDs) is
#: answered number by number, as before.
MAX_ENTRIES = 8
MAX_BYTES = 32 << 20

#: Below this share of hits, picking the few hits one by one is cheaper than masking.
_SPARSE = 16

#: hit byte (0, or any true value) → 0x00 or 0xFF, and → 0 or 1
_TO_FF = bytes([0] + [0xFF] * 255)
_TO_01 = bytes([0] + [1] * 255)

#: The most bytes a number takes in a rendering (`` 4294967295``).
_WIDEST = 11

_cache: OrderedDict[bytes, bytes] = OrderedDict()
#: Lists seen once and not rendered yet.
_seen: OrderedDict[bytes, None] = OrderedDict()
_cached_bytes = 0
_lock = threading.Lock()


def search_line(numbers: array[int] | memoryview | range, hits: Sequence[int]) -> bytes:
    """``* SEARCH`` with those of ``numbers`` (ascending, ≥ 1) whose ``hits`` entry is
    true: the same bytes as ``response.search_data(compress(numbers, hits))``."""
    mask = hits.translate(_TO_01) if isinstance(hits, bytes) else bytes(map(bool, hits))
    n = len(numbers)
    if len(mask) != n:
        raise ValueError("one hit entry per number")
    if mask.count(1) * _SPARSE < n:  # a few hits: only they are boxed and formatted
        found = []
        i = mask.find(1)
        while i >= 0:
            found.append(numbers[i])
            i = mask.find(1, i + 1)
        return r.search_data(found)
    text = rendered(numbers)
    if text is None:
        return r.search_data(compress(numbers, mask))
    return b"* SEARCH" + masked(numbers, text, mask) + b"\r\n"


def rendered(numbers: array[int] | memoryview | range) -> bytes | None:
    """`` 1 2 3 …`` for all of ``numbers``: from the cache when the list is the same,
    extended from the rendering of a list it begins with (messages only added), and
    None the first time a list is seen — a rendering costs about what one answer
    picked number by number does, so a list searched once, or lists that push each
    other out, cost no more than before."""
    key = _key(numbers)
    with _lock:
        return _rendered(numbers, key)


def _rendered(numbers: array[int] | memoryview | range, key: bytes) -> bytes | None:
    text = _cache.get(key)
    if text is not None:
        _cache.move_to_end(key)
        return text
    if len(key) + _WIDEST * len(numbers) > MAX_BYTES:
        return None
    prefix = next((k for k in reversed(_cache) if len(k) < len(key) and key.startswith(k)), None)
    if prefix is not None and not isinstance(numbers, range):
        text = _cache[prefix] + _render(numbers[(len(prefix) - 1) // numbers.itemsize :])
    elif key in _seen:
        text = _render(numbers)
    else:
        _seen[key] = None
        if len(_seen) > MAX_ENTRIES:
            _seen.popitem(last=False)
        return None
    _seen.pop(key, None)
    _remember(key, text)
    return text


def _remember(key: bytes, text: bytes) -> None:
    global _cached_bytes
    _cache[key] = text
    _cached_bytes += len(key) + len(text)
    while len(_cache) > MAX_ENTRIES or _cached_bytes > MAX_BYTES:
        old_key, old_text = _cache.popitem(last=False)
        _cached_bytes -= len(old_key) + len(old_text)


def masked(numbers: array[int] | memoryview | range, text: bytes, mask: bytes) -> bytes:
    """Those runs of ``text`` (the rendering of ``numbers``) whose ``mask`` byte is set."""
    n = len(numbers)
    if n == 0:
        return b""
    ff = mask.translate(_TO_FF)
    runs = []
    start = 0
    digits = len(str(numbers[0]))
    while start < n:
        end = bisect_left(numbers, 10**digits, start)
        width = digits + 1  # the space before the number
        run = bytearray((end - start) * width)
        hits = ff[start:end]
        for k in range(width):
            run[k::width] = hits
        runs.append(run)
        start = end
        digits += 1
    keep = b"".join(runs)
    if len(keep) != len(text):
        raise ValueError("the rendering does not match the numbers")
    kept = int.from_bytes(text, "little") & int.from_bytes(keep, "little")
    return kept.to_bytes(len(text), "little").translate(None, b"\0")


def clear() -> None:
    """Forget every rendering (tests)."""
    global _cached_bytes
    with _lock:
        _cache.clear()
        _seen.clear()
        _cached_bytes = 0


def _key(numbers: array[int] | memoryview | range) -> bytes:
    if isinstance(numbers, range):  # sequence numbers 1..n
        return b"S%d %d" % (numbers.start, numbers.stop)
    return b"U" + numbers.tobytes()  # the kinds never share a key, nor a prefix


def _render(numbers: array[int] | memoryview | range) -> bytes:
    return r.search_data(numbers)[len(b"* SEARCH") : -2]
