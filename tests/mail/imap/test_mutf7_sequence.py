"""Modified UTF-7 (RFC 3501 §5.1.3) and sequence sets."""

from __future__ import annotations

import pytest

from clustermail.mail.imap import mutf7
from clustermail.mail.imap.sequence import SequenceRange, SequenceSet, SequenceSetError

PAIRS = [
    ("INBOX", "INBOX"),
    ("", ""),
    ("&", "&-"),
    ("A & B", "A &- B"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("été", "&AOk-t&AOk-"),
    ("😀", "&2D3eAA-"),  # astral plane: a UTF-16 surrogate pair
    ("tab\there", "tab&AAk-here"),
    ("ÿ/", "&AP8-/"),
]


@pytest.mark.parametrize(("text", "wire"), PAIRS)
def test_mutf7_examples(text: str, wire: str) -> None:
    assert mutf7.encode(text) == wire
    assert mutf7.decode(wire) == text


INVALID = [
    ("&Jjo", "unterminated"),
    ("a&b", "unterminated"),
    ("&Jjo!-", "invalid character"),
    ("&AGE-", "printable ASCII"),  # "a" must be written directly
    ("&ACY-", "printable ASCII"),  # "&" must be "&-"
    ("&AOk-&AOk-", "adjacent"),  # must have been one run
    ("&AOl-", "canonical"),  # non-zero leftover bits
    ("&A-", "truncated"),
    ("&AO-", "UTF-16"),
    ("&2D0-", "UTF-16"),  # lone high surrogate
    ("é", "must be modified-UTF-7 encoded"),
    ("a\x00b", "must be modified-UTF-7 encoded"),
]


@pytest.mark.parametrize(("wire", "message"), INVALID)
def test_mutf7_rejects_non_canonical_or_broken_names(wire: str, message: str) -> None:
    with pytest.raises(mutf7.MUTF7Error, match=message):
        mutf7.decode(wire)


def test_sequence_set_parse_and_print() -> None:
    parsed = SequenceSet.parse("1,3:5,*:4,7:*")
    assert parsed.ranges == (
        SequenceRange(1, 1),
        SequenceRange(3, 5),
        SequenceRange(None, 4),
        SequenceRange(7, None),
    )
    assert str(parsed) == "1,3:5,*:4,7:*"
    assert parsed.uses_star
    assert not SequenceSet.parse("2").uses_star


@pytest.mark.parametrize(
    "text", ["", "0", "1:0", "01", "1,", ",1", "1::2", "a", "1 2", "$", "4294967296", "1" * 30]
)
def test_invalid_sequence_sets(text: str) -> None:
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(text)


def test_sequence_set_resolution() -> None:
    seq = SequenceSet.parse("2,4:*")
    assert list(seq.iter_numbers(6)) == [2, 4, 5, 6]
    assert seq.contains(5, 6) and not seq.contains(3, 6)
    # n:* with n beyond the last message still means the last message
    assert list(SequenceSet.parse("10:*").iter_numbers(6)) == [6]
    assert SequenceSet.parse("10:*").contains(6, 6)
    assert list(SequenceSet.parse("*").iter_numbers(0)) == []
    assert SequenceSet.parse("5:3,1,2,4:9").intervals(100) == [(1, 9)]
    assert list(SequenceSet.parse("3:5,20").iter_numbers(10)) == [3, 4, 5]


def test_compress_keeps_order_for_copyuid() -> None:
    assert str(SequenceSet.compress([304, 319, 320, 321, 5])) == "304,319:321,5"
    assert str(SequenceSet.compress([1])) == "1"
    with pytest.raises(SequenceSetError):
        SequenceSet.compress([])
    with pytest.raises(SequenceSetError):
        SequenceSet.compress([0])
    with pytest.raises(SequenceSetError):
        SequenceSet(())
