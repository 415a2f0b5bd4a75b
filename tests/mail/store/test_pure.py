"""Pure pieces of the store: flags, folder names, quota policy, the packed folder index."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustermail.mail.store import flags, names, quota
from clustermail.mail.store.errors import InvalidFolderNameError
from clustermail.mail.store.index import Columns
from clustermail.mail.store.quota import QuotaLimits, QuotaState


def test_flags_round_trip() -> None:
    mask, kw = flags.parse_flags(["\\SEEN", "\\flagged", "$Forwarded", "Work"])
    assert mask == flags.SEEN | flags.FLAGGED and kw == {"$Forwarded", "Work"}
    assert flags.flag_names(mask, flags.encode_keywords(kw)) == [
        "\\Seen",
        "\\Flagged",
        "$Forwarded",
        "Work",
    ]
    assert flags.encode_keywords([]) is None
    for bad in ("\\Bogus", "has space", "", "a(b"):
        with pytest.raises(flags.InvalidFlagError):
            flags.parse_flags([bad])


def test_folder_names() -> None:
    assert names.normalize("inbox") == "INBOX"
    assert names.normalize("Inbox/Sub") == "INBOX/Sub"
    assert names.normalize("Archive/2024") == "Archive/2024"
    for bad in ("", "/a", "a/", "a//b", "a\x00b", "x" * 2000):
        with pytest.raises(InvalidFolderNameError):
            names.normalize(bad)
    assert names.is_inferior("a/b", "a") and not names.is_inferior("ab", "a")
    assert names.renamed("a/b/c", "a", "z") == "z/b/c"


def test_quota_policy() -> None:
    limits = QuotaLimits(warning=10, prohibit_send=20, prohibit_send_receive=30)
    assert quota.state(5, limits) is QuotaState.OK
    assert quota.state(10, limits) is QuotaState.WARNING
    assert quota.state(25, limits) is QuotaState.PROHIBIT_SEND
    assert quota.state(30, limits) is QuotaState.PROHIBIT_SEND_RECEIVE
    assert quota.delivery_decision(25, 5, limits, full_is_permanent=False).accepted
    temp = quota.delivery_decision(25, 6, limits, full_is_permanent=False)
    assert (temp.accepted, temp.code) == (False, "4.2.2")
    assert quota.delivery_decision(0, 31, limits, full_is_permanent=False).code == "5.2.2"
    assert not quota.may_send(20, limits).accepted
    assert quota.should_warn(10, limits, None, 0.0)
    assert not quota.should_warn(10, limits, 0.0, 3600.0)
    assert quota.should_warn(10, limits, 0.0, 86400.0)
    assert not quota.should_warn(9, limits, None, 0.0)
    assert b"Subject: Your mailbox is almost full" in quota.warning_message("a@x", 12, limits, 0.0)
    with pytest.raises(ValueError):
        QuotaLimits(warning=-1)


rows = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**63 - 1),
        st.integers(-(2**63), 2**63 - 1),
    ),
    max_size=50,
)


@given(rows)
def test_index_chunk_round_trip(data: list[tuple[int, int, int, int]]) -> None:
    chunk = Columns()
    for uid, (f, size, modseq, date) in enumerate(data, 1):
        chunk.append((uid, f, size, modseq, date))
    decoded = Columns.decode(chunk.encode())
    assert [decoded.row(i) for i in range(len(decoded))] == [
        (uid, f, size, modseq, date) for uid, (f, size, modseq, date) in enumerate(data, 1)
    ]
    if data:
        assert decoded.position(len(data)) == len(data) - 1
        assert decoded.position(len(data) + 1) is None
