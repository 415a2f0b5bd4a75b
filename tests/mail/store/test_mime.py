"""MIME analysis against handwritten RFC 3501 ENVELOPE/BODYSTRUCTURE expectations."""

from __future__ import annotations

import email.mime.application
import email.mime.multipart
import email.mime.text
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustermail.mail.store import mime


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


NIL = None
NO_EXT = [NIL, NIL, NIL, NIL]  # md5, disposition, language, location


def text_part(
    subtype: str, params: list[object], octets: int, lines: int, enc: str = "7BIT"
) -> list[object]:
    return ["TEXT", subtype, params, NIL, NIL, enc, octets, lines, *NO_EXT]


ALTERNATIVE = crlf(
    'From: "Joe Q. Public" <john.q.public@example.com>\n'
    "To: Mary Smith <mary@x.test>, jdoe@one.test, Who? <one@y.test>\n"
    'Cc: <boss@nil.test>, "Giant; \\"Big\\" Box" <sysservices@example.net>\n'
    "Subject: Saying Hello\n"
    "Date: Fri, 21 Nov 1997 09:55:06 -0600\n"
    "Message-ID: <1234@local.machine.example>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/alternative; boundary=XX\n"
    "\n"
    "preamble\n"
    "--XX\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "hello\n"
    "world\n"
    "--XX\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>hi</b>\n"
    "--XX--\n"
    "epilogue\n"
)


def test_multipart_alternative_envelope_and_body() -> None:
    s = mime.analyze(ALTERNATIVE)
    joe = [["Joe Q. Public", NIL, "john.q.public", "example.com"]]
    assert s.envelope == [
        "Fri, 21 Nov 1997 09:55:06 -0600",
        "Saying Hello",
        joe,
        joe,
        joe,
        [
            ["Mary Smith", NIL, "mary", "x.test"],
            [NIL, NIL, "jdoe", "one.test"],
            ["Who?", NIL, "one", "y.test"],
        ],
        [[NIL, NIL, "boss", "nil.test"], ['Giant; "Big" Box', NIL, "sysservices", "example.net"]],
        NIL,
        NIL,
        "<1234@local.machine.example>",
    ]
    assert s.body == [
        text_part("PLAIN", ["CHARSET", "utf-8"], len(b"hello\r\nworld"), 2),
        text_part("HTML", ["CHARSET", "US-ASCII"], len(b"<b>hi</b>"), 1),
        "ALTERNATIVE",
        ["BOUNDARY", "XX"],
        NIL,
        NIL,
        NIL,
    ]
    assert s.size == len(ALTERNATIVE)


def body_of(raw: bytes, s: mime.MessageStructure, section: str) -> bytes:
    span = s.section(section)
    assert span is not None, section
    return raw[span[0] : span[1]]


def test_sections_of_multipart() -> None:
    s = mime.analyze(ALTERNATIVE)
    assert body_of(ALTERNATIVE, s, "") == ALTERNATIVE
    assert body_of(ALTERNATIVE, s, "HEADER").endswith(b"boundary=XX\r\n\r\n")
    assert body_of(ALTERNATIVE, s, "TEXT").startswith(b"preamble\r\n--XX")
    assert body_of(ALTERNATIVE, s, "1") == b"hello\r\nworld"
    assert body_of(ALTERNATIVE, s, "1.MIME") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert body_of(ALTERNATIVE, s, "2") == b"<b>hi</b>"
    assert body_of(ALTERNATIVE, s, "HEADER.FIELDS (FROM)").startswith(b"From:")
    assert s.section("3") is None
    assert s.section("1.1") is None


NESTED = crlf(
    "From: Alice <alice@example.org>\n"
    "To: bob@example.net\n"
    "Subject: Report\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="outer"\n'
    "\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=inner\n"
    "\n"
    "--inner\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "Hi Bob\n"
    "--inner\n"
    'Content-Type: text/html; charset="utf-8"\n'
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<p>Hi Bob</p>\n"
    "--inner--\n"
    "\n"
    "--outer\n"
    'Content-Type: application/pdf; name="report.pdf"\n'
    "Content-Transfer-Encoding: base64\n"
    'Content-Disposition: attachment; filename="report.pdf"; size=6\n'
    "Content-Description: The report\n"
    "Content-ID: <part2@example.org>\n"
    "Content-Language: en, de\n"
    "Content-Location: http://example.org/report.pdf\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "\n"
    "SGVsbG8h\n"
    "--outer--\n"
)


def test_nested_multipart_with_attachment() -> None:
    s = mime.analyze(NESTED)
    assert s.body == [
        [
            text_part("PLAIN", ["CHARSET", "us-ascii"], 6, 1),
            text_part("HTML", ["CHARSET", "utf-8"], 13, 1, "QUOTED-PRINTABLE"),
            "ALTERNATIVE",
            ["BOUNDARY", "inner"],
            NIL,
            NIL,
            NIL,
        ],
        [
            "APPLICATION",
            "PDF",
            ["NAME", "report.pdf"],
            "<part2@example.org>",
            "The report",
            "BASE64",
            8,
            "Q2hlY2sgSW50ZWdyaXR5IQ==",
            ["ATTACHMENT", ["FILENAME", "report.pdf", "SIZE", "6"]],
            ["en", "de"],
            "http://example.org/report.pdf",
        ],
        "MIXED",
        ["BOUNDARY", "outer"],
        NIL,
        NIL,
        NIL,
    ]
    assert body_of(NESTED, s, "1.1") == b"Hi Bob"
    assert body_of(NESTED, s, "1.2") == b"<p>Hi Bob</p>"
    assert body_of(NESTED, s, "2") == b"SGVsbG8h"
    assert body_of(NESTED, s, "2.MIME").startswith(b"Content-Type: application/pdf")
    assert body_of(NESTED, s, "2.MIME").endswith(b"IQ==\r\n\r\n")
    assert body_of(NESTED, s, "1").startswith(b"--inner\r\n")
    assert body_of(NESTED, s, "1").endswith(b"--inner--\r\n")
    assert set(s.parts) == {"1", "1.1", "1.2", "2"}


INNER = crlf(
    "From: Eve <eve@example.com>\n"
    "To: carol@example.com\n"
    "Subject: hello\n"
    "Date: Tue, 1 Jul 2003 10:52:37 +0200\n"
    "\n"
    "Inner body\n"
    "line 2"
)
FORWARD = (
    crlf(
        "From: carol@example.com\n"
        "To: dave@example.com\n"
        "Subject: Fwd: hello\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=b1\n"
        "\n"
        "--b1\n"
        "Content-Type: text/plain\n"
        "\n"
        "See below.\n"
        "--b1\n"
        "Content-Type: message/rfc822\n"
        "\n"
    )
    + INNER
    + crlf("\n--b1--\n")
)


def test_message_rfc822() -> None:
    s = mime.analyze(FORWARD)
    eve = [["Eve", NIL, "eve", "example.com"]]
    inner_env = [
        "Tue, 1 Jul 2003 10:52:37 +0200",
        "hello",
        eve,
        eve,
        eve,
        [[NIL, NIL, "carol", "example.com"]],
        NIL,
        NIL,
        NIL,
        NIL,
    ]
    assert s.body == [
        text_part("PLAIN", ["CHARSET", "US-ASCII"], 10, 1),
        [
            "MESSAGE",
            "RFC822",
            NIL,
            NIL,
            NIL,
            "7BIT",
            len(INNER),
            inner_env,
            text_part("PLAIN", ["CHARSET", "US-ASCII"], 18, 2),
            7,
            *NO_EXT,
        ],
        "MIXED",
        ["BOUNDARY", "b1"],
        NIL,
        NIL,
        NIL,
    ]
    assert body_of(FORWARD, s, "2") == INNER
    assert body_of(FORWARD, s, "2.HEADER").startswith(b"From: Eve")
    assert body_of(FORWARD, s, "2.TEXT") == b"Inner body\r\nline 2"
    assert body_of(FORWARD, s, "2.1") == b"Inner body\r\nline 2"
    assert mime.body_without_extensions(s.body)[1] == [
        "MESSAGE",
        "RFC822",
        NIL,
        NIL,
        NIL,
        "7BIT",
        len(INNER),
        inner_env,
        ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], NIL, NIL, "7BIT", 18, 2],
        7,
    ]


ENCODED = (
    b"From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>\r\n"
    b"To: undisclosed-recipients:;\r\n"
    b'Cc: Team: a@x.test, "B, b" <b@x.test>;, c@x.test (Carl)\r\n'
    b"Subject: =?utf-8?B?w6TDtsO8?= and raw Gr\xc3\xbc\xc3\x9fe\r\n"
    b"  folded \xe9\r\n"
    b"Sender:\r\n"
    b"Reply-To: <@route.one,@route.two:list@example.org>\r\n"
    b"In-Reply-To: <parent@x.test>\r\n"
    b"\r\n"
    b"8-bit body: Gr\xc3\xbc\xc3\x9fe \xff\xfe\r\n"
)


def test_encoded_words_raw_groups_routes_and_8bit() -> None:
    s = mime.analyze(ENCODED)
    keld = [["=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=", NIL, "keld", "dkuug.dk"]]
    subject = s.envelope[1]
    assert isinstance(subject, str)
    assert subject.startswith("=?utf-8?B?w6TDtsO8?= and raw Grüße")
    assert (
        subject.encode("utf-8", "surrogateescape")
        == b"=?utf-8?B?w6TDtsO8?= and raw Gr\xc3\xbc\xc3\x9fe  folded \xe9"
    )
    assert s.envelope[2] == keld
    assert s.envelope[3] == keld  # empty Sender: falls back to From
    assert s.envelope[4] == [[NIL, "@route.one,@route.two", "list", "example.org"]]
    assert s.envelope[5] == [[NIL, NIL, "undisclosed-recipients", NIL], [NIL, NIL, NIL, NIL]]
    assert s.envelope[6] == [
        [NIL, NIL, "Team", NIL],
        [NIL, NIL, "a", "x.test"],
        ["B, b", NIL, "b", "x.test"],
        [NIL, NIL, NIL, NIL],
        ["Carl", NIL, "c", "x.test"],
    ]
    assert s.envelope[8] == "<parent@x.test>"
    assert s.body == text_part("PLAIN", ["CHARSET", "US-ASCII"], 24, 1)
    json.dumps(s.envelope)  # lone surrogates still serialize


def test_broken_mime_falls_back_to_text_plain() -> None:
    no_boundary = crlf("Content-Type: multipart/mixed\n\nnot really multipart\n")
    assert mime.analyze(no_boundary).body == text_part("PLAIN", ["CHARSET", "US-ASCII"], 22, 1)
    missing = crlf("Content-Type: multipart/mixed; boundary=zz\n\nno delimiter here\n")
    assert mime.analyze(missing).body[:2] == ["TEXT", "PLAIN"]
    garbage = crlf("Content-Type: ;;;garbage===\nContent-Transfer-Encoding: \n\nx")
    assert mime.analyze(garbage).body == text_part("PLAIN", ["CHARSET", "US-ASCII"], 1, 1)
    unterminated = crlf(
        "Content-Type: multipart/mixed; boundary=q\n\n--q\n\nfirst\n--q\n\nlast part\n"
    )
    s = mime.analyze(unterminated)
    assert [p[6] for p in s.body[:2] if isinstance(p, list)] == [5, 11]
    assert body_of(unterminated, s, "2") == b"last part\r\n"


def test_no_headers_and_empty() -> None:
    raw = crlf("just a body line\nsecond\n")
    s = mime.analyze(raw)
    assert s.envelope == [NIL] * 10
    assert s.body == text_part("PLAIN", ["CHARSET", "US-ASCII"], len(raw), 2)
    assert body_of(raw, s, "HEADER") == b""
    assert body_of(raw, s, "TEXT") == raw
    empty = mime.analyze(b"")
    assert empty.body == text_part("PLAIN", ["CHARSET", "US-ASCII"], 0, 0)
    only_header = mime.analyze(b"Subject: x\r\n")
    assert only_header.envelope[1] == "x"
    assert only_header.body[6] == 0


def test_digest_defaults_to_message_rfc822() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody one\n--d--\n"
    )
    part = mime.analyze(raw).body[0]
    assert isinstance(part, list)
    assert part[:2] == ["MESSAGE", "RFC822"]
    assert isinstance(part[7], list)
    assert part[7][1] == "one"


def test_normalize_newlines() -> None:
    assert mime.normalize_newlines(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert mime.normalize_newlines(b"a\r\nb") == b"a\r\nb"
    assert mime.normalize_newlines(b"\na") == b"\r\na"
    assert mime.normalize_newlines(b"a\r\r\n\r") == b"a\r\r\n\r"


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"x", b"\n\r"]), max_size=30))
def test_normalize_newlines_leaves_exactly_the_crlf_only_messages_alone(
    pieces: list[bytes],
) -> None:
    raw = b"".join(pieces)
    expected = (
        raw
        if raw.count(b"\n") == raw.count(b"\r\n")
        else raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    )
    assert mime.normalize_newlines(raw) == expected


def test_json_round_trip() -> None:
    s = mime.analyze(FORWARD)
    assert mime.MessageStructure.from_json(s.to_json()) == s


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_never_raise(raw: bytes) -> None:
    s = mime.analyze(raw)
    for start, body, end in [*s.parts.values(), *s.messages.values()]:
        assert 0 <= start <= body <= end <= len(raw)
    mime.MessageStructure.from_json(s.to_json())


part_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), part_text), min_size=1, max_size=4), st.booleans())
def test_agrees_with_email_package_on_generated_messages(
    parts: list[tuple[bool, str]], nest: bool
) -> None:
    outer = email.mime.multipart.MIMEMultipart()
    target = outer
    if nest:
        target = email.mime.multipart.MIMEMultipart("alternative")
        outer.attach(target)
    for is_attachment, text in parts:
        if is_attachment:
            att = email.mime.application.MIMEApplication(text.encode(), Name="f.bin")
            att.add_header("Content-Disposition", "attachment", filename="f.bin")
            target.attach(att)
        else:
            target.attach(email.mime.text.MIMEText(text))
    raw = outer.as_bytes()
    s = mime.analyze(raw)
    leaves = [p for p in outer.walk() if not p.is_multipart()]
    ours = [n for n, (_, b, e) in s.parts.items() if not _is_multipart(raw[_header(s, n)])]
    assert len(ours) == len(leaves)
    for leaf, num in zip(leaves, sorted(ours), strict=True):
        payload = leaf.get_payload()
        assert isinstance(payload, str)
        assert body_of(raw, s, num).rstrip(b"\r\n") == payload.encode().rstrip(b"\r\n")


def _header(s: mime.MessageStructure, num: str) -> slice:
    start, body, _ = s.parts[num]
    return slice(start, body)


def _is_multipart(header: bytes) -> bool:
    return b"multipart/" in header.lower()


@pytest.mark.parametrize("parts", [1, 3, 400])
@pytest.mark.parametrize("floor", [64 * 1024, 1, 2000])
def test_analyze_with_json_gives_the_structure_and_its_json(parts: int, floor: int) -> None:
    """The JSON a delivery stores is the one the size check encoded, whichever of the three
    outcomes (whole, body as one part, opaque) the budget allows."""
    body = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n" for n in range(parts))
    raw = (
        "From: a@example.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body + "--b--\r\n"
    ).encode()
    limits = mime.MimeLimits(structure_floor=floor, max_structure_bytes=max(floor, 1))
    structure, text = mime.analyze_with_json(raw, limits)
    assert structure == mime.analyze(raw, limits)
    assert text == structure.to_json()
    assert mime.MessageStructure.from_json(text) == structure
