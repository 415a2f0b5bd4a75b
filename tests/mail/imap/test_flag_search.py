"""The whole-mailbox fast path for flag/number/UID searches agrees with the general
per-message evaluator (search.matches), for any mix of flags and keys."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from clustermail.mail.imap import search as s
from clustermail.mail.imap.fetch import flag_search
from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.imap.sequence import SequenceSet
from clustermail.mail.store.index import Columns, FolderListing

SYSTEM = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]


class Message:
    def __init__(self, view: MailboxView, seq: int) -> None:
        self.seq, self.uid = seq, view.uids[seq - 1]
        self.flags = set(view.flag_list(seq))
        self.internal_date, self.size, self.sent_date = datetime.now(UTC), 1, None

    def header(self, name: str) -> list[str]:
        return []

    def body_text(self) -> str:
        return ""

    def full_text(self) -> str:
        return ""


def view_of(messages: list[tuple[int, int, str]]) -> MailboxView:
    cols = Columns()
    keywords = {}
    uid = 0
    for gap, mask, kw in messages:
        uid += gap
        cols.uids.append(uid)
        cols.flags.append(mask)
        cols.sizes.append(1)
        cols.modseqs.append(1)
        cols.dates.append(0)
        if kw:
            keywords[uid] = kw
    return MailboxView("INBOX", FolderListing(cols, keywords), uidvalidity=1,
                       uidnext=uid + 1, modseq=1, read_only=False)


leaf = st.one_of(
    st.sampled_from([*SYSTEM, "$Junk", "$junk", "Work"]).map(s.FlagKey),
    st.just(s.AllKey()),
    st.sampled_from(["1:3", "2,*", "5:*", "1"]).map(
        lambda t: s.SequenceKey(SequenceSet.parse(t))),
    st.sampled_from(["1:4", "3,9:*", "*"]).map(lambda t: s.UidKey(SequenceSet.parse(t))),
)
keys = st.recursive(leaf, lambda inner: st.one_of(
    inner.map(s.NotKey),
    st.tuples(inner, inner).map(lambda p: s.OrKey(*p)),
    st.lists(inner, min_size=1, max_size=3).map(lambda k: s.AndKey(tuple(k))),
), max_leaves=6)
mailboxes = st.lists(
    st.tuples(st.integers(1, 3), st.integers(0, 31), st.sampled_from(["", "$Junk", "work x"])),
    min_size=1, max_size=12,
)


@given(mailboxes, keys)
def test_fast_path_agrees_with_the_evaluator(messages: list[tuple[int, int, str]],
                                             key: s.SearchKey) -> None:
    view = view_of(messages)
    ctx = s.SearchContext(max_seq=view.exists, max_uid=view.max_uid())
    hits = flag_search(key, view, ctx)
    assert hits is not None
    expected = [s.matches(key, Message(view, seq), ctx) for seq in range(1, view.exists + 1)]
    assert [bool(h) for h in hits] == expected
