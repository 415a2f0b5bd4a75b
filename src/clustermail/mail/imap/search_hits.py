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
from collections.abc import Sequence
from itertools import compress

from clustermail.mail.imap import response as r

#: Renderings kept (one per distinct number list: a mailbox's sessions share one), lists
#: seen once remembered, and the bytes all of it may keep (renderings, their keys, the
#: keys of lists seen once); a list too big for the budget (~2 million UIDs) is
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

#: (key, rendering), the most recently used first; and the keys of lists seen once, not
#: rendered yet (newest first). Few entries: found by comparing bytes (a memcmp), not by
#: hashing a key of 4 bytes per message. Both count against MAX_BYTES.
_cache: list[tuple[bytes, bytes]] = []
_seen: list[bytes] = []
_used = 0
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
    for i, (k, text) in enumerate(_cache):
        if k == key:
            if i:
                _cache.insert(0, _cache.pop(i))
            return text
    if len(key) + _WIDEST * len(numbers) > MAX_BYTES:
        return None
    prefix = next((e for e in _cache if len(e[0]) < len(key) and key.startswith(e[0])), None)
    seen = next((i for i, k in enumerate(_seen) if k == key), None)
    if prefix is not None and not isinstance(numbers, range):
        text = prefix[1] + _render(numbers[(len(prefix[0]) - 1) // numbers.itemsize :])
    elif seen is not None:
        text = _render(numbers)
    else:
        _keep(key, None)
        return None
    if seen is not None:
        _forget_seen(seen)
    _keep(key, text)
    return text


def _keep(key: bytes, text: bytes | None) -> None:
    """Adds a rendering (or, with None, a list seen once), then, while over the budget,
    drops the oldest other lists seen once, then the least recently used renderings
    (the new entry fits alone: the caller checked)."""
    global _used
    if text is None:
        _seen.insert(0, key)
        _used += len(key)
    else:
        _cache.insert(0, (key, text))
        _used += len(key) + len(text)
    if len(_seen) > MAX_ENTRIES:
        _forget_seen(len(_seen) - 1)
    if len(_cache) > MAX_ENTRIES:
        _forget_rendering()
    newest_seen = 1 if text is None else 0
    while _used > MAX_BYTES:
        if len(_seen) > newest_seen:
            _forget_seen(len(_seen) - 1)
        elif len(_cache) > 1 - newest_seen:
            _forget_rendering()
        else:
            break


def _forget_seen(i: int) -> None:
    global _used
    _used -= len(_seen.pop(i))


def _forget_rendering() -> None:
    global _used
    old_key, old_text = _cache.pop()
    _used -= len(old_key) + len(old_text)


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
    global _used
    with _lock:
        _cache.clear()
        _seen.clear()
        _used = 0


def _key(numbers: array[int] | memoryview | range) -> bytes:
    if isinstance(numbers, range):  # sequence numbers 1..n
        return b"S%d %d" % (numbers.start, numbers.stop)
    return b"U" + numbers.tobytes()  # the kinds never share a key, nor a prefix


def _render(numbers: array[int] | memoryview | range) -> bytes:
    return r.search_data(numbers)[len(b"* SEARCH") : -2]
