"""SEARCH with the bytes prefilter and the header cache gives exactly what the decoding
evaluator alone gives: folded and encoded headers, 8-bit text, case-folding beyond
ASCII, transfer encodings, charsets that are not ASCII-transparent, messages without a
header or without a body, and messages too large to be read whole. Real database file;
the reference is :func:`search.matches` over :class:`SearchMessage` message by message."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import search as s
from clustermail.mail.imap import search_prefilter as sp
from clustermail.mail.imap.fetch import MessageFetcher, SearchMessage
from clustermail.mail.imap.handlers.selected import _search_messages
from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.imap.parser import parse_command
from clustermail.mail.store import MailboxDatabase, MessageNotFoundError

USER = "alice@example.test"


def plain(subject: str, body: str, extra: str = "") -> bytes:
    return (
        f"From: Bob <bob@example.test>\r\nTo: {USER}\r\nSubject: {subject}\r\n{extra}"
        f"Message-ID: <{abs(hash(subject + body))}@example.test>\r\n\r\n{body}\r\n"
    ).encode()


def part(headers: str, body: bytes) -> bytes:
    return headers.encode() + b"\r\n\r\n" + body + b"\r\n"


def multipart(subject: str, *parts: bytes) -> bytes:
    out = (
        f"Subject: {subject}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n'
    ).encode()
    for p in parts:
        out += b"--zz\r\n" + p
    return out + b"--zz--\r\n"


CORPUS: list[bytes] = [
    plain("benchmark message 17", "Filed under tag07.", "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"),
    plain("benchmark message 171", "Filed under tag21.", "Date: 2 Jan 2024 23:30:00 -0800\r\n"),
    plain("bad date", "x", "Date: not a date\r\n"),
    plain("folded date", "x", "Date: Wed, 3 Jan 2024\r\n 10:00:00 +0100\r\n"),
    plain("hello\r\n world", "folded subject"),  # HEADER "hello world" matches
    plain("tabbed\r\n\tfold", "tab fold"),
    b"Subject: abc\r\r\n def\r\nFrom: x@example.test\r\n\r\nbare CR before a fold\r\n",
    plain("=?utf-8?q?caf=C3=A9_cr=C3=A8me?=", "encoded subject"),
    plain("=?us-ascii?q?secret_word?=", "ascii encoded word"),
    plain("=?utf-8?b?" + base64.b64encode("Grüße aus Köln".encode()).decode() + "?=", "b"),
    "Subject: Grüße\r\nFrom: y@example.test\r\n\r\nStraße, 8-bit header\r\n".encode(),
    plain("kloss", "the plain spelling of Kloß"),
    # KELVIN SIGN case-folds to "k"
    "Subject: kelvin\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n20 \u212a is cold\r\n"
    .encode(),
    b"\r\nJust a body, tag77, no header at all.\r\n",
    b"Subject: only a header tag88\r\nX-Custom: value",
    plain("b64", "", "Content-Transfer-Encoding: base64\r\n")[:-2]
    + base64.b64encode(b"the word is tag99 here") + b"\r\n",
    plain("qp", "soft line break in ta=\r\ng55 and caf=C3=A9",
          "Content-Transfer-Encoding: quoted-printable\r\n"
          "Content-Type: text/plain; charset=utf-8\r\n"),
    plain("utf7", "+AHQ-ag66 in UTF-7", "Content-Type: text/plain; charset=utf-7\r\n"),
    plain("utf7q", "+AHQ-ag67 in UTF-7", 'Content-Type: text/plain; charset="UTF-7"\r\n'),
    plain("utf7f", "+AHQ-ag68", "Content-Type: text/plain;\r\n charset=\r\n utf-7\r\n"),
    plain("2231", "+AHQ-ag69", "Content-Type: text/plain; charset*=utf-7''\r\n"),
    multipart(
        "mixed parts",
        part("Content-Type: text/plain; charset=us-ascii", b"first part tag31"),
        part("Content-Type: text/html", b"<p>second part tag32</p>"),
        part("Content-Type: text/plain; charset=utf-16",
             "tag33 in UTF-16".encode("utf-16-le")),
        part("Content-Type: application/octet-stream", b"tag34 in an attachment"),
        part("Content-Type: message/rfc822",
             plain("inner =?iso-8859-1?q?caf=E9?=", "inner body tag35")),
    ),
    b"Subject:nospace\r\nX-Custom: Value\r\n\r\nbody text\r\n",
    plain("twice", "x", "Subject: second subject line\r\n"),
    b"X-Big: " + b"a" * (sp.HEADER_LIMIT + 10) + b"\r\nSubject: after a huge field\r\n\r\nb\r\n",
    plain("huge body", "tag44 " + "lorem ipsum " * (sp.WHOLE_LIMIT // 12 + 10)),
    plain("charset in prose", "set charset=whatever in the text, tag45"),
]

CRITERIA: list[str] = [
    'HEADER Subject "message 17"',
    'SUBJECT "MESSAGE 17"',
    'SUBJECT "hello world"',
    'SUBJECT "hello  world"',
    'SUBJECT "tabbed\tfold"',
    'SUBJECT "abc def"',
    'SUBJECT "secret word"',
    "SUBJECT secret_word",
    "SUBJECT kloss",
    "SUBJECT only",
    "SUBJECT after",
    "SUBJECT second",
    "SUBJECT nospace",
    'HEADER X-Custom ""',
    "HEADER X-Custom value",
    "HEADER X-Big aaaa",
    "FROM bob",
    "TO alice",
    "BODY tag07",
    "BODY TAG07",
    "BODY tag77",
    "BODY tag88",
    "BODY tag99",
    "BODY tag55",
    "BODY tag66",
    "BODY tag67",
    "BODY tag68",
    "BODY tag69",
    "BODY tag31",
    "BODY tag32",
    "BODY tag33",
    "BODY tag34",
    "BODY tag35",
    "BODY tag44",
    "BODY tag45",
    'BODY "cold"',
    'BODY ""',
    "TEXT tag07",
    "TEXT secret",
    "TEXT x-custom",
    'TEXT "subject: nospace"',
    'TEXT " nospace"',
    'TEXT "world"',
    'TEXT "hello world"',
    'BODY "hello world"',
    'TEXT "abc def"',
    "TEXT tag35",
    "TEXT inner",
    "OR BODY tag07 SUBJECT hello",
    "NOT BODY tag07",
    "UNSEEN BODY tag21",
    "OR SUBJECT kloss SUBJECT message",
    "SUBJECT message BODY tag07",
    "NOT SUBJECT message",
    "SENTBEFORE 2-Jan-2024",
    "SENTON 2-Jan-2024",
    "SENTSINCE 2-Jan-2024",
    "SENTSINCE 1-Jan-1971",
    "NOT SENTBEFORE 1-Jan-1971",
    "OR SENTON 3-Jan-2024 SUBJECT kloss",
    "SENTSINCE 1-Jan-2024 BODY tag07",
    'HEADER Date ""',
    'HEADER Content-Transfer-Encoding ""',
    "UNSEEN SENTBEFORE 1-Jan-2025",
    "UID 3:6 BODY tag07",
    "UID 4,20:* SUBJECT e",
    "2:5 TEXT e",
    "SEEN UID 1:* NOT DELETED SUBJECT b",
    "UNSEEN OR SUBJECT a BODY b",
]

# Needles beyond ASCII, sent as UTF-8 literals.
UTF8_CRITERIA: list[tuple[str, str]] = [
    ("SUBJECT", "café"),
    ("SUBJECT", "CAFÉ"),
    ("SUBJECT", "GRÜSSE"),
    ("SUBJECT", "köln"),
    ("SUBJECT", "Kloß"),
    ("BODY", "STRASSE"),
    ("BODY", "\u212a is"),
    ("BODY", "k is cold"),
    ("BODY", "café"),
    ("TEXT", "grüße"),
    ("TEXT", "kloß"),
    ("HEADER Subject", "ẞ"),
]


@pytest.fixture(scope="module")
def mailbox(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MailboxDatabase, MailboxView]]:
    db = MailboxDatabase(Path(tmp_path_factory.mktemp("search")) / "db.sqlite")
    db.mount(1)
    db.create_mailbox_sync(USER)
    for n in range(2):  # expunged: UIDs then differ from message numbers
        db.append_sync(USER, "INBOX", plain(f"gone {n}", "tag07"), flag_names=["\\Deleted"])
    db.expunge_sync(USER, "INBOX")
    for n, raw in enumerate(CORPUS):
        db.append_sync(USER, "INBOX", raw, flag_names=["\\Seen"] if n % 2 else [])
    view = MailboxView.from_snapshot("INBOX", db.folder_snapshot(USER, "INBOX"), read_only=True)
    yield db, view
    db.dismount()


def reference(db: MailboxDatabase, view: MailboxView, cmd: c.Search) -> list[int]:
    context = s.SearchContext(max_seq=view.exists, max_uid=view.max_uid())
    out = []
    for seq in range(1, view.exists + 1):
        uid = view.uids[seq - 1]
        msg = SearchMessage(view, seq, MessageFetcher(db, USER, "INBOX", uid, view.uidvalidity))
        try:
            if s.matches(cmd.key, msg, context):
                out.append(uid if cmd.uid else seq)
        except MessageNotFoundError:
            continue
    return out


def check(db: MailboxDatabase, view: MailboxView, cmd: c.AnyCommand) -> list[int]:
    assert isinstance(cmd, c.Search)
    context = s.SearchContext(max_seq=view.exists, max_uid=view.max_uid())
    expected = reference(db, view, cmd)
    sp.HEADERS = sp.HeaderCache(sp.HEADERS.budget)
    cold = _search_messages(db, USER, view, cmd, context)
    warm = _search_messages(db, USER, view, cmd, context)  # from the header cache
    assert cold == expected
    assert warm == expected
    return expected


@pytest.mark.parametrize("criteria", CRITERIA)
def test_same_results_as_the_evaluator(
    mailbox: tuple[MailboxDatabase, MailboxView], criteria: str
) -> None:
    db, view = mailbox
    check(db, view, parse_command(b"a UID SEARCH " + criteria.encode()))
    check(db, view, parse_command(b"a SEARCH " + criteria.encode()))  # numbers, not UIDs


@pytest.mark.parametrize(("key", "needle"), UTF8_CRITERIA)
def test_same_results_for_utf8_needles(
    mailbox: tuple[MailboxDatabase, MailboxView], key: str, needle: str
) -> None:
    db, view = mailbox
    data = needle.encode()
    raw = b"a UID SEARCH CHARSET UTF-8 %s {%d}\r\n%s" % (key.encode(), len(data), data)
    check(db, view, parse_command(raw))


def uids_with(view: MailboxView, *needles: bytes) -> list[int]:
    return [view.uids[n] for n, raw in enumerate(CORPUS) if any(x in raw for x in needles)]


def test_the_edges_do_match(mailbox: tuple[MailboxDatabase, MailboxView]) -> None:
    """The corpus really exercises what the prefilter must not rule out."""
    db, view = mailbox

    def found(criteria: bytes) -> list[int]:
        return check(db, view, parse_command(b"a UID SEARCH " + criteria))

    assert found(b'SUBJECT "hello world"') == uids_with(view, b"hello\r\n world")
    assert found(b'TEXT "hello world"') == uids_with(view, b"hello\r\n world")
    assert found(b'SUBJECT "abc def"') == uids_with(view, b"abc\r\r\n def")
    assert found(b'SUBJECT "secret word"') == uids_with(view, b"secret_word")
    assert found(b"BODY tag99") == uids_with(view, b"b64")
    assert found(b"BODY tag55") == uids_with(view, b"ta=\r\ng55")
    for tag in (b"tag66", b"tag67", b"tag68"):
        assert found(b"BODY " + tag) == uids_with(view, b"+AHQ-ag" + tag[3:])
    assert found(b"BODY tag33") == uids_with(view, b"mixed parts")
    assert found(b"BODY tag44") == uids_with(view, b"huge body")
    assert found(b"SUBJECT after") == uids_with(view, b"after a huge field")
    assert found(b'TEXT "subject: nospace"') == uids_with(view, b"Subject:nospace")
    assert found(b'HEADER X-Custom ""') == uids_with(view, b"X-Custom")
    assert found(b"SENTON 2-Jan-2024") == uids_with(view, b"2 Jan 2024 23:30")
    assert found(b"SENTON 3-Jan-2024") == uids_with(view, b"3 Jan 2024\r\n 10:00")
    kelvin = "\u212a".encode()
    assert found(b"BODY k") != []
    assert found(b'BODY "k is cold"') == uids_with(view, kelvin)
    ss = "ß".encode()
    data = b"a UID SEARCH CHARSET UTF-8 SUBJECT {%d}\r\nKlo%s" % (3 + len(ss), ss)
    assert check(db, view, parse_command(data)) == uids_with(view, b"Subject: kloss")


def test_messages_gone_from_the_store_are_not_found(tmp_path: Path) -> None:
    db = MailboxDatabase(tmp_path / "db.sqlite")
    db.mount(1)
    try:
        db.create_mailbox_sync(USER)
        for n in range(3):
            flags = ["\\Deleted"] if n == 1 else []
            db.append_sync(USER, "INBOX", plain(f"gone {n}", f"tag{n}"), flag_names=flags)
        view = MailboxView.from_snapshot(
            "INBOX", db.folder_snapshot(USER, "INBOX"), read_only=True
        )
        assert db.expunge_sync(USER, "INBOX") == [view.uids[1]]  # the view still has it
        for criteria in (b"BODY tag1", b"TEXT tag", b"BODY tag", b"UNSEEN BODY tag"):
            found = check(db, view, parse_command(b"a UID SEARCH " + criteria))
            assert view.uids[1] not in found
    finally:
        db.dismount()


# ------------------------------------------------------------------ the pieces


def test_needles_with_line_breaks_are_left_to_the_evaluator() -> None:
    assert sp.build(s.BodyKey("a\r\nb")) is None
    assert sp.build(s.HeaderKey("SUBJECT", "x\ny")) is None


def test_keys_that_need_no_bytes_have_no_prefilter() -> None:
    assert sp.build(s.NotKey(s.BodyKey("x"))) is None
    assert sp.build(s.HeaderKey("SUBJECT", "")) == sp.EVERY_HEADER  # rules nothing out
    assert sp.build(s.OrKey(s.BodyKey("x"), s.AllKey())) is None
    assert sp.build(s.TextKey("a:b")) is None
    assert sp.build(s.TextKey(" a")) is None
    assert sp.build(s.AndKey((s.AllKey(), s.BodyKey("X")))) == sp.Need("body", b"x")


def test_a_needle_that_folds_beyond_ascii_rules_out_plain_messages_only() -> None:
    pre = sp.build(s.BodyKey("é"))
    assert pre == sp.Need("body", None)
    assert not sp.maybe(pre, sp.Haystack(b"Subject: x\r\n\r\ncafe\r\n"))
    assert sp.maybe(pre, sp.Haystack("Subject: x\r\n\r\ncafé\r\n".encode()))


def test_plain_charsets_only() -> None:
    def body_plain(headers: bytes) -> bool:
        return sp.Haystack(headers + b"\r\n\r\nbody\r\n").full() is not None

    assert body_plain(b"Content-Type: text/plain; charset=us-ascii")
    assert body_plain(b'Content-Type: text/plain; charset="ISO-8859-1"')
    assert body_plain(b"Content-Transfer-Encoding: 7bit")
    assert not body_plain(b"Content-Type: text/plain; charset=utf-7")
    assert not body_plain(b"Content-Type: text/plain; charset='us-ascii'")
    assert not body_plain(b"Content-Type: text/plain; charset=us-ascii-x")
    assert not body_plain(b"Content-Type: text/plain; charset*=us-ascii''")
    assert not body_plain(b"Content-Transfer-Encoding: Base64")
    assert not body_plain(b"Content-Transfer-Encoding: x-uuencode")


def test_the_header_cache_stays_within_its_budget() -> None:
    cache = sp.HeaderCache(1000)
    for n in range(5):
        key = ("db", USER, n)
        cache.folder(key)
        cache.add(key, {u: (b"x" * 50, b"X" * 50) for u in range(3)})
    assert cache._total <= 1000
    assert len(cache.folder(("db", USER, 4))) == 3
    assert cache.folder(("db", USER, 0)) == {}  # dropped, least recently searched
    cache.add(("db", USER, 9), {1: (None, b"y" * 2000)})  # larger than the budget: skipped
    assert cache._total <= 1000


def test_a_second_reader_of_a_folder_waits_for_the_first() -> None:
    cache = sp.HeaderCache(10_000)
    key = ("db", USER, 1)
    done = cache.fill_turn(key)
    assert done is not None
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(cache.fill_turn, key)
        assert not waiting.done()  # it waits up to FILL_WAIT for the first reader
        cache.filled(key, done)
        assert waiting.result(timeout=sp.FILL_WAIT) is None
    again = cache.fill_turn(key)
    assert again is not None
    cache.filled(key, again)


def test_concurrent_first_searches_agree(mailbox: tuple[MailboxDatabase, MailboxView]) -> None:
    db, view = mailbox
    context = s.SearchContext(max_seq=view.exists, max_uid=view.max_uid())
    parsed = [parse_command(b"a UID SEARCH " + x.encode()) for x in CRITERIA if "SUBJECT" in x]
    cmds = [cmd for cmd in parsed if isinstance(cmd, c.Search)]
    expected = [reference(db, view, cmd) for cmd in cmds]
    sp.HEADERS = sp.HeaderCache(sp.HEADERS.budget)
    with ThreadPoolExecutor(4) as pool:
        runs = [
            pool.map(lambda cmd: _search_messages(db, USER, view, cmd, context), cmds)
            for _ in range(4)
        ]
        for run in runs:
            assert list(run) == expected


@pytest.mark.parametrize(
    "criteria",
    ['SUBJECT "hello world"', "SUBJECT message", 'HEADER X-Custom ""', "SENTON 2-Jan-2024"],
)
def test_a_folder_larger_than_the_cache_is_searched_alike(
    mailbox: tuple[MailboxDatabase, MailboxView], criteria: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search holds at most the cache's budget of header blocks; past it, the prefilter
    decides as it reads and the evaluator reads the rest again."""
    db, view = mailbox
    monkeypatch.setattr(sp, "HEADERS", sp.HeaderCache(2_000))
    check(db, view, parse_command(b"a UID SEARCH " + criteria.encode()))


def test_reads_are_grouped_in_ranges() -> None:
    assert list(sp._runs([])) == []
    assert list(sp._runs([5])) == [(5, 5)]
    assert list(sp._runs([1, 2, 3, 60, 200, 201])) == [(1, 60), (200, 201)]
    n = sp.CHUNK
    assert list(sp._runs(range(1, 2 * n + 2))) == [(1, n), (n + 1, 2 * n), (2 * n + 1, 2 * n + 1)]
