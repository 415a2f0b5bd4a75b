"""A flag SEARCH's number list built by masking a rendering of all the numbers is byte
for byte the list picked number by number, whatever the numbers (digit counts from
1 to 10, gaps, UID 4294967295), the hits, and the state of the rendering cache."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import compress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustermail.mail.imap import response as r
from clustermail.mail.imap import search_hits as sh


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    sh.clear()
    yield
    sh.clear()


def expected(numbers: array[int] | memoryview | range, hits: bytes | list[bool]) -> bytes:
    return r.search_data(compress(numbers, hits))


@st.composite
def uid_lists(draw: st.DrawFn) -> array[int]:
    """Ascending UIDs whose gaps make them cross digit counts, up to 2**32 - 1."""
    start = draw(st.sampled_from([1, 8, 95, 990, 99_990, 999_999_990, 4_294_967_200]))
    gaps = draw(st.lists(st.integers(1, 40), max_size=120))
    uids = [start]
    for gap in gaps:
        if uids[-1] + gap > 2**32 - 1:
            break
        uids.append(uids[-1] + gap)
    return array("I", uids)


@given(uid_lists(), st.data())
def test_the_masked_list_is_the_list_picked_one_by_one(
    uids: array[int], data: st.DataObject
) -> None:
    hits = data.draw(st.binary(min_size=len(uids), max_size=len(uids)))  # any true byte is a hit
    seqs = range(1, len(uids) + 1)
    want_uids, want_seqs = expected(uids, hits), expected(seqs, hits)
    for _ in range(3):  # seen once (picked), rendered, then from the cache
        assert sh.search_line(uids, hits) == want_uids
        assert sh.search_line(memoryview(uids), hits) == want_uids  # a snapshot's column
        assert sh.search_line(seqs, hits) == want_seqs


@given(uid_lists(), st.data())
def test_hits_may_be_a_list_of_booleans(uids: array[int], data: st.DataObject) -> None:
    hits = data.draw(st.lists(st.booleans(), min_size=len(uids), max_size=len(uids)))
    for _ in range(2):
        assert sh.search_line(uids, hits) == expected(uids, hits)


def test_a_list_is_rendered_the_second_time_it_is_searched() -> None:
    uids = array("I", range(1, 101))
    assert sh.rendered(uids) is None
    assert sh.rendered(uids) == b"".join(b" %d" % n for n in range(1, 101))


def test_a_list_with_messages_added_extends_the_rendering_it_begins_with() -> None:
    before = array("I", range(5, 2000, 3))
    sh.rendered(before)
    sh.rendered(before)
    after = array("I", [*before, 2001, 10_000, 4_000_000_000])
    # Never seen, yet rendered at once: only the three new numbers are formatted.
    assert sh.rendered(after) == b"".join(b" %d" % n for n in after)
    hits = bytes([1, 0, 1]) * (len(after) // 3) + b"\1" * (len(after) % 3)
    assert sh.search_line(after, hits) == expected(after, hits)


def test_an_expunge_is_not_taken_for_an_addition() -> None:
    uids = array("I", range(1, 200))
    sh.rendered(uids)
    sh.rendered(uids)
    shorter = array("I", [n for n in uids if n != 50])
    assert sh.rendered(shorter) is None  # not a prefix: seen once, not rendered
    hits = b"\1" * len(shorter)
    assert sh.search_line(shorter, hits) == expected(shorter, hits)


def test_renderings_stay_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sh, "MAX_BYTES", 6_000)
    lists = [array("I", range(k, k + 300)) for k in (1, 1000, 5000)]  # ~1.2 KB key, ~1.5 KB text
    for uids in lists:
        sh.rendered(uids)
        assert sh.rendered(uids) is not None
    assert sh.rendered(lists[0]) is None  # pushed out by the later ones
    big = array("I", range(1, 600))  # with its key, more than the whole budget
    for _ in range(3):  # never rendered: picked number by number each time
        assert sh.rendered(big) is None
        assert sh.search_line(big, b"\1" * len(big)) == expected(big, b"\1" * len(big))
    assert sh.rendered(lists[2]) is not None  # left where it was


def test_a_mask_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError):
        sh.search_line(array("I", [1, 2, 3]), b"\1\1")


@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 400)), max_size=40))
def test_the_budget_counts_every_kept_byte(calls: list[tuple[int, int]]) -> None:
    """Whatever lists come, in whatever order: what is kept (renderings and the keys of
    lists seen once) stays within the budget, and the account matches what is kept."""
    sh.clear()
    budget = 20_000
    original = sh.MAX_BYTES
    sh.MAX_BYTES = budget
    try:
        for start, count in calls:
            uids = array("I", range(start, start + count))
            got = sh.rendered(uids)
            assert got is None or got == b"".join(b" %d" % n for n in uids)
            kept = sum(len(k) + len(t) for k, t in sh._cache) + sum(map(len, sh._seen))
            assert kept == sh._used <= budget
            assert len(sh._cache) <= sh.MAX_ENTRIES and len(sh._seen) <= sh.MAX_ENTRIES
    finally:
        sh.MAX_BYTES = original
        sh.clear()
