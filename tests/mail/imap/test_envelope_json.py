"""ENVELOPE rendered straight from the stored structure JSON (envelope_json, FETCH's
prefetch) gives the very bytes of rendering the parsed structure, the way every
ENVELOPE was rendered before: over a varied corpus, over random data, and end to end
through a server on a real database, old-layout rows included."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustermail.mail.imap import envelope_json
from clustermail.mail.imap import fetch as imap_fetch
from clustermail.mail.imap import response as r
from clustermail.mail.store import MailboxDatabase, mime
from tests.support.imap_lines import Client
from tests.support.imap_server import USERS, ServerThread

ALICE = USERS[0]
CORPUS_DIR = Path(__file__).parent / "reference" / "corpus" / "messages"


def _message(headers: bytes, body: bytes = b"body\r\n") -> bytes:
    return headers + b"\r\n" + body


#: Odd headers on top of the reference corpus: each makes the stored envelope take
#: another turn (escapes, literals, groups, NIL, skeletons too long to keep...).
ODD: list[bytes] = [
    _message(b"From: a@example.test\r\nSubject: =?utf-8?q?caf=C3=A9?= =?iso-8859-1?b?4Q==?=\r\n"),
    _message("From: Jörg <jörg@exämple.test>\r\nSubject: Grüße\r\n".encode()),
    _message(b"From: \xe9t\xe9 <x@example.test>\r\nSubject: latin-1 \xff\xfe\r\n"),
    _message(b'From: "Doe, \\"JD\\" John" <jd@example.test>\r\nSubject: a \\ b "c"\r\n'),
    _message(b"From: a@example.test\r\nSubject: tab\there\r\n"),
    _message(b"From: a@example.test\r\nSubject: del\x7fhere\r\n"),
    _message(b"From: a@example.test\r\nSubject: nul\x00here\r\n"),
    _message(b"From: a@example.test\r\nSubject: " + b"long " * 300 + b"\r\n"),
    _message(b"From: a@example.test\r\nSubject: exactly\r\nTo: " + b"b" * 1010 + b"@x.test\r\n"),
    _message(
        b"From: a@example.test\r\nTo: "
        + b", ".join(b"r%d@example.test" % i for i in range(40))
        + b"\r\nCc: g: x@example.test, y@example.test;\r\n"
    ),
    _message(b"To: undisclosed-recipients:;\r\nCc: Team: ;, lone@example.test\r\n"),
    _message(b"Subject: ],[null,[]],body:[\r\nFrom: [null] <n@example.test>\r\n"),
    _message(b'Subject: ],"body":[null,"x"]\r\n'),
    _message(b"Subject: \r\nFrom: \r\nTo: localonly\r\nIn-Reply-To: <a@b>\r\n"),
    _message(b"Sender: s@example.test\r\nReply-To: r@example.test, q@example.test\r\n"),
    _message(b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m@x>\r\n"),
    _message(b"X-Only: nothing an envelope shows\r\n"),
    b"no header at all",
    _message(b"From: =?utf-8?b?IlF1b3RlZCI=?= <q@example.test>\r\nSubject: =?x?q?bad?=\r\n"),
]


def corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS_DIR.glob("*.eml"))] + ODD


def _parsed_way(structure_json: str) -> bytes:
    """How every ENVELOPE was rendered before: the whole structure parsed, then rendered."""
    return r.render_envelope(mime.MessageStructure.from_json(structure_json).envelope)


@pytest.mark.parametrize("raw", corpus(), ids=lambda raw: raw[:30].decode("latin-1"))
def test_stored_structures_render_the_same(raw: bytes) -> None:
    _, text = mime.analyze_with_json(raw)
    envelope = envelope_json.envelope_text(text)
    assert envelope is not None
    assert json.loads(envelope) == json.loads(text)["envelope"]
    fast = envelope_json.render(envelope)
    assert fast is None or fast == _parsed_way(text)
    assert imap_fetch._envelope_from_text(text) == _parsed_way(text)


def test_the_common_case_takes_the_fast_way() -> None:
    """Not None everywhere: plain ASCII envelopes (most mail) are rendered from the text."""
    fast = [
        raw
        for raw in corpus()
        if envelope_json.render(envelope_json.envelope_text(mime.analyze_with_json(raw)[1]) or "")
    ]
    assert len(fast) >= 15
    text = mime.analyze_with_json(ODD[11])[1]  # brackets, commas and null inside strings
    assert envelope_json.render(envelope_json.envelope_text(text) or "") == _parsed_way(text)


def test_other_layouts_and_non_envelopes_are_left_to_the_parser() -> None:
    assert envelope_json.envelope_text('{"envelope":[],"v":1,"body":[]}') is None
    assert envelope_json.envelope_text('{"v":1,"envelope":[null]}') is None
    for text in (
        "[null]",  # nine fields short
        '["a",null,null,null,null,null,null,null,null,1]',  # a number
        '["a",null,null,null,null,null,null,null,null,{"b":null}]',
        '[[["a","b","c"]],null,null,null,null,null,null,null,null,null]',
        '["a",null,[["n",null,"m"]],null,null,null,null,null,null,null]',  # 3-field address
        '["a,null,null,null,null,null,null,null,null,null]',  # unbalanced quote
        '"just a string"',
        "",
        "[" * 100_000 + "]" * 100_000,  # deeper than the parser goes
        '["a",null,[1.5],null,null,null,null,null,null,null]',  # TypeError from len()
    ):
        assert envelope_json.render(text) is None, text
        assert imap_fetch._envelope_from_text(envelope_json.PREFIX + text + ',"body":[]}') is None


# ------------------------------------------------------------------- random data

#: Strings JSON writes as they are (the fast way's), and strings it escapes or IMAP sends
#: as literals.
_PLAIN = ["a", " ", ",", "[", "]", "null", ":", "{", "=?utf-8?q?x?=", "(", ")"]
_ODD = ['"', "\\", "\t", "\x7f", "\x00", "é", "\udce9", '"],[']


def _text(tokens: list[str]) -> st.SearchStrategy[str]:
    short = st.lists(st.sampled_from(tokens), max_size=8).map("".join)
    return short | st.text(st.sampled_from(tokens[:4]), min_size=1020, max_size=1030)


def _envelopes(text: st.SearchStrategy[str | bytes]) -> st.SearchStrategy[list[mime.IMAPValue]]:
    nstring = st.none() | text
    addresses = st.none() | st.lists(st.lists(nstring, min_size=4, max_size=4), max_size=3)
    return st.tuples(
        nstring, nstring, addresses, addresses, addresses, addresses, addresses, addresses,
        nstring, nstring,
    ).map(list)  # fmt: skip


_JSON: st.SearchStrategy[object] = st.recursive(
    st.none() | st.booleans() | st.integers(0, 9) | _text(_PLAIN + _ODD) | st.just([]),
    lambda inner: st.lists(inner, min_size=1, max_size=11),
    max_leaves=30,
)


def _same(envelope: list[mime.IMAPValue]) -> None:
    for ascii_only in (True, False):  # rows written without escaping are rendered the same
        text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=ascii_only)
        fast = envelope_json.render(text)
        assert fast is None or fast == r.render_envelope(envelope)
    stored = json.dumps({"v": 1, "envelope": envelope, "body": []}, separators=(",", ":"))
    assert imap_fetch._envelope_from_text(stored) == r.render_envelope(envelope)


@settings(max_examples=200, deadline=None)
@given(_envelopes(_text(_PLAIN)))
def test_random_plain_envelopes_render_the_same(envelope: list[mime.IMAPValue]) -> None:
    # Printable ASCII without quotes or backslashes: always the fast way but for literals.
    if envelope_json.render(json.dumps(envelope, separators=(",", ":"))) is None:
        assert any(len(s) > r.MAX_QUOTED for s in _strings(envelope))
    _same(envelope)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@settings(max_examples=200, deadline=None)
@given(_envelopes(_text(_PLAIN + _ODD)))
def test_random_envelopes_render_the_same(envelope: list[mime.IMAPValue]) -> None:
    _same(envelope)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_random_json_is_rendered_only_when_it_is_an_envelope(value: object) -> None:
    fast = envelope_json.render(json.dumps(value, separators=(",", ":")))
    if fast is not None:
        assert isinstance(value, list)
        assert fast == r.render_envelope(value)


# ----------------------------------------------------------------- end to end


def test_fetch_all_envelopes_cold_matches_one_at_a_time(
    server: ServerThread, db: MailboxDatabase
) -> None:
    messages = corpus()
    for raw in messages:
        db.deliver_sync(raw, [ALICE])
    # A row of an older layout (spaces after separators): read the slow way, same bytes.
    with sqlite3.connect(db.path) as conn:
        body_id, text = conn.execute("SELECT id, structure FROM body ORDER BY id").fetchone()
        spaced = json.dumps(json.loads(text))
        conn.execute("UPDATE body SET structure = ? WHERE id = ?", (spaced, body_id))
    conn.close()
    c = Client(server)
    try:
        c.cmd("SELECT INBOX")
        imap_fetch._CACHE.data.clear()
        together = c.cmd("FETCH 1:* (FLAGS ENVELOPE)")
        assert len(together) == len(messages)
        # One message at a time: no prefetch, the whole structure parsed and rendered.
        imap_fetch._CACHE.data.clear()
        alone = [c.cmd(f"FETCH {n} (FLAGS ENVELOPE)")[0] for n in range(1, len(messages) + 1)]
        assert together == alone
        assert together == c.cmd("FETCH 1:* (FLAGS ENVELOPE)")  # warm: from the cache
    finally:
        c.close()


def test_the_skeleton_map_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope_json, "_TEMPLATES", {})
    monkeypatch.setattr(envelope_json, "MAX_TEMPLATES", 3)
    for n in range(10):  # n addresses in To: a skeleton of its own each
        to: list[mime.IMAPValue] | None = [[f"n{i}", None, "m", "h"] for i in range(n)] or None
        envelope: list[mime.IMAPValue] = ["d", "s", None, None, None, to, None, None, None, None]
        text = json.dumps(envelope, separators=(",", ":"))
        assert envelope_json.render(text) == r.render_envelope(envelope)
        assert len(envelope_json._TEMPLATES) <= 3
    # Too long a skeleton to keep: translated each time.
    long_to: list[mime.IMAPValue] = [[f"n{i}", None, "m", "h"] for i in range(40)]
    envelope = ["d", "s", None, None, None, long_to, None, None, None, None]
    for separators in ((",", ":"), (", ", ": ")):  # spaces too (an older layout's)
        text = json.dumps(envelope, separators=separators)
        assert envelope_json.render(text) == r.render_envelope(envelope)
    assert all(len(k) <= envelope_json.MAX_SKELETON for k in envelope_json._TEMPLATES)
    deep = "[" * 5000 + "]" * 5000  # one long piece: not kept either
    assert envelope_json.render(deep) is None
    assert all(
        sum(map(len, k)) <= envelope_json.MAX_SKELETON_CHARS for k in envelope_json._TEMPLATES
    )


# ------------------------------------------- render_envelope against its first form


def _reference_envelope(envelope: Sequence[r.Nested]) -> bytes:
    """render_envelope as it was first written (the general nstring for every field),
    kept as the oracle of the quicker one."""
    if isinstance(envelope, str | bytes) or len(envelope) != 10:
        raise r.RenderError("an ENVELOPE has exactly 10 fields")
    out: list[bytes] = []
    for i, item in enumerate(envelope):
        if i in (2, 3, 4, 5, 6, 7):
            out.append(_reference_addresses(item))
        else:
            out.append(r.nstring(_reference_text(item, "ENVELOPE field")))
    return b"(" + b" ".join(out) + b")"


def _reference_text(value: r.Nested, what: str) -> str | bytes | None:
    if value is None or isinstance(value, str | bytes):
        return value
    raise r.RenderError(f"{what} must be a string or None, got {type(value).__name__}")


def _reference_addresses(value: r.Nested) -> bytes:
    if value is None or (isinstance(value, Sequence) and len(value) == 0):
        return b"NIL"
    if isinstance(value, str | bytes | int):
        raise r.RenderError("an address list must be None or a list of addresses")
    parts: list[bytes] = []
    for address in value:
        if isinstance(address, str | bytes | int) or address is None or len(address) != 4:
            raise r.RenderError("an address is [name, adl, mailbox, host]")
        parts.append(
            b"(" + b" ".join(r.nstring(_reference_text(f, "address field")) for f in address)
            + b")"
        )
    return b"(" + b"".join(parts) + b")"


def _outcome(render: Callable[[Sequence[r.Nested]], bytes], value: object) -> object:
    try:
        return render(value)  # type: ignore[arg-type]
    except (r.RenderError, TypeError, ValueError) as exc:
        return type(exc), str(exc)


_ANY_TEXT = _text(_PLAIN + _ODD) | st.binary(max_size=6) | st.text(max_size=6)
_SHAPED: st.SearchStrategy[object] = st.recursive(
    st.none() | st.integers(0, 3) | st.booleans() | _ANY_TEXT | st.just([]),
    lambda inner: st.lists(inner, min_size=1, max_size=5) | st.tuples(inner, inner, inner, inner),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    _envelopes(_ANY_TEXT)
    | st.lists(_SHAPED, min_size=10, max_size=10)
    | st.lists(_SHAPED, max_size=11)
    | _SHAPED
)
def test_render_envelope_matches_its_first_form(value: object) -> None:
    assert _outcome(r.render_envelope, value) == _outcome(_reference_envelope, value)
