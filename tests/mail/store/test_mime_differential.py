"""The MIME analysis with its fast paths gives byte for byte the structure JSON of the
general implementation it replaced (``mime_reference``, a frozen copy), on generated,
broken and hostile messages and under small :class:`MimeLimits`.

``CLUSTERMAIL_FUZZ_SCALE=N`` runs N times as many generated inputs.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import imap as bench_imap
from bench import mime as bench_mime
from bench import store as bench_store
from clustermail.mail.store import mime, mime_fastpath
from tests.mail.store import mime_reference as ref
from tests.mail.store import test_mime

SCALE = int(os.environ.get("CLUSTERMAIL_FUZZ_SCALE", "1"))
#: The messages the IMAP reference tests compare with Dovecot.
EML = Path(__file__).parents[1] / "imap" / "reference" / "corpus" / "messages"


def examples(n: int) -> settings:
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


RFC2231_PIECE = re.compile(rb"\*(?:\d+\*?)?\s*=")


def same(raw: bytes, limits: mime.MimeLimits = mime.LIMITS) -> None:
    ours = mime.analyze_with_json(raw, limits)
    assert ours[0].to_json() == ours[1]
    try:
        theirs = ref.analyze_with_json(raw, ref.MimeLimits(**asdict(limits)))
    except TypeError:
        # The reference's one crash: a multipart with parameters in RFC 2231 pieces that
        # the email package cannot order (``name*`` next to ``name*0``; reading the
        # boundary decodes them all). The analysis now reads it as no boundary.
        assert RFC2231_PIECE.search(raw), raw
        return
    assert ours[1] == theirs[1], raw


# --------------------------------------------------------------------------- pieces

FIELD_NAMES = [
    b"From", b"To", b"Cc", b"Bcc", b"Sender", b"Reply-To", b"Subject", b"Date",
    b"Message-ID", b"In-Reply-To", b"Content-Type", b"content-type", b"CONTENT-TYPE",
    b"Content-Disposition", b"Content-Transfer-Encoding", b"Content-ID",
    b"Content-Description", b"Content-Language", b"Content-Location", b"Content-MD5",
    b"MIME-Version", b"X-Mailer", b"Received", b"X:Y", b"Bad Name", b"", b"\xc3\xa9",
]  # fmt: skip
ADDRESS_PIECES = [
    b"a@b.test", b"<a@b.test>", b"Alice <alice@x.test>", b'"Bob Q. Public" <bob@y.test>',
    b'""<c@d>', b'"a\\"b" <e@f>', b"(comment)", b"Name (c) <x@y>", b"group: a@b, c@d;",
    b"undisclosed-recipients:;", b"<@route.one,@two:x@y>", b"x@y (Carl)", b"Joe Q. Public",
    b"<x@y> (after)", b"\xc3\xa9t\xc3\xa9 <u@v>", b"\xff\xfe", b"=?utf-8?q?x?= <q@r>",
    b"a", b"@", b"<", b">", b",", b";", b":", b'"', b"\\", b"(", b")", b"<>", b"<a>",
    b"a@", b"@b", b"a b c d e f g h <i@j>", b"[1.2.3.4]", b"a.b@[::1]", b"\x0b", b"\r",
    b"\n", b"\r\n", b"\r\n ", b"\t", b" ", b'"quoted, comma" <q@c>', b'"" <e@e>',
    b"<a@b>\r\n", b"user@host\n",
]  # fmt: skip
CONTENT_TYPES = [
    b"text/plain", b"TEXT/HTML", b"text/plain ", b"multipart/mixed", b"Multipart/Alternative",
    b"multipart/digest", b"message/rfc822", b"application/octet-stream", b"text", b"",
    b"image/", b"/x", b"a/b/c", b"text/plain(comment)", b'"text/plain"', b"t\xc3\xa9xt/plain",
    b"boundary=B", b"x-y/z+w",
]  # fmt: skip
DISPOSITIONS = [
    b"attachment", b"inline", b"INLINE", b"", b"attach ment", b"form-data", b"\xc3\xa9",
]  # fmt: skip
PARAMS = [
    b"; charset=us-ascii", b'; charset="utf-8"', b"; boundary=B", b'; boundary="B"',
    b'; Boundary="<B>"', b'; boundary=" B "', b"; boundary=B ", b'; boundary=""',
    b'; boundary="\\"B\\""', b'; name="a;b"', b'; name="a\\"b"', b"; name*=utf-8''%C3%A9",
    b"; name*0=a; name*1=b", b"; name*0*=utf-8''a; name*1=b", b"; format", b";", b";;",
    b"; x=", b'; x=""', b"; X-Y=z", b"; n=\xc3\xa9", b" ; a=b", b";a=b", b"; a = b",
    b"; a=<b>", b'; a="<b>"', b"(comment)", b'; a="b\tc"', b"; a=b=c", b'; a="b"c',
    b'; a="b', b"; filename=report.pdf", b'; filename="r\xc3\xa9sum\xc3\xa9.pdf"',
    b"; size=6", b"; a=b; a=c", b"; *=x", b"; =x", b" ;", b"; a=\x7f",
    b"; a=\"b's c\"",
]  # fmt: skip
TEXT_VALUES = [
    b"hello", b"", b"  spaced  ", b"=?utf-8?B?w6TDtsO8?=", b"Gr\xc3\xbc\xc3\x9fe", b"\xff",
    b"7bit", b"BASE64", b"quoted-printable", b"<id@x>", b"en, de", b",", b"en",
    b"Mon, 1 Jan 2024 00:00:00 +0000", b"a\rb", b"\x00",
]  # fmt: skip
SIMPLE_ADDRESSES = [
    b"a@b.test", b"<a@b.test>", b"Alice <alice@x.test>", b'"Bob Q. Public" <bob@y.test>',
    b"Joe Q. Public <joe@x.test>", b'"" <e@e>', b"x.y+z@[1.2.3.4]", b"a b c d e f g <h@i>",
    b"\xc3\xa9t\xc3\xa9 <u@v>", b"<a@b>",
]  # fmt: skip
GOOD_NAMES = [n for n in FIELD_NAMES if n and b" " not in n and b":" not in n and n.isascii()]
EOLS = [b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b"\n\r"]
BOUNDARIES = [b"B", b"B", b"<B>", b"\"B\"", b"B1", b"B2", b"", b"B "]

pick = st.sampled_from


@st.composite
def address_value(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # a list the fast path takes, or nearly
        pieces = draw(st.lists(pick(SIMPLE_ADDRESSES), max_size=6))
        seps = [b", "] * len(pieces)
        spoil = draw(st.booleans())
        if pieces and spoil:
            seps[draw(st.integers(0, len(pieces) - 1))] = draw(pick(ADDRESS_PIECES))
    else:
        pieces = draw(st.lists(pick(ADDRESS_PIECES), max_size=6))
        seps = draw(st.lists(pick([b", ", b",", b" ", b"", b" ,\r\n\t"]), min_size=len(pieces)))
    return b"".join(p + s for p, s in zip(pieces, seps, strict=False))


@st.composite
def content_value(draw: st.DrawFn, kinds: list[bytes]) -> bytes:
    return draw(pick(kinds)) + b"".join(draw(st.lists(pick(PARAMS), max_size=4)))


@st.composite
def field(draw: st.DrawFn, ctype: bytes | None = None, clean: bool = False) -> bytes:
    """A header field; ``clean``: a well-formed name and CRLF line ends (the fast path's
    header blocks), whatever the value."""
    name = draw(pick(GOOD_NAMES if clean else FIELD_NAMES))
    low = name.lower()
    if ctype is not None:
        name, value = b"Content-Type", ctype
    elif low in (b"from", b"to", b"cc", b"bcc", b"sender", b"reply-to"):
        value = draw(address_value())
    elif low == b"content-type":
        value = draw(content_value(CONTENT_TYPES))
    elif low == b"content-disposition":
        value = draw(content_value(DISPOSITIONS))
    else:
        value = draw(pick(TEXT_VALUES))
    if value and draw(st.integers(0, 4)) == 0:  # fold somewhere
        at = draw(st.integers(0, len(value)))
        folds = [b"\r\n ", b"\r\n\t"] if clean else [b"\r\n ", b"\r\n\t", b"\n ", b"\r\n"]
        value = value[:at] + draw(pick(folds)) + value[at:]
    spacing = draw(pick([b": ", b":", b" : ", b":\t", b":  "]))
    return name + spacing + value + (b"\r\n" if clean else draw(pick(EOLS)))


@st.composite
def entity(draw: st.DrawFn, depth: int = 0, clean: bool | None = None) -> bytes:
    """A header block and a body: multipart (children recursively) or message/rfc822
    (a message inside) or text, with broken parts here and there. ``clean`` (drawn when
    None): header blocks of well-formed CRLF lines, the fast path's."""
    if clean is None:
        clean = draw(st.booleans())
    kind = draw(pick(["text", "text", "multipart", "message", "other"]) if depth < 3 else
                pick(["text", "other"]))  # fmt: skip
    boundary = draw(pick(BOUNDARIES))
    ctype: bytes | None = None
    if kind == "multipart":
        sub = draw(pick([b"mixed", b"alternative", b"digest", b"related"]))
        quoted = draw(st.booleans())
        ctype = b"multipart/" + sub + (b'; boundary="%s"' if quoted else b"; boundary=%s") % (
            boundary.strip(b'"<> ')
        )
    elif kind == "message":
        ctype = b"message/rfc822"
    fields = draw(st.lists(field(clean=clean), max_size=6))
    if ctype is not None:
        fields.insert(draw(st.integers(0, len(fields))), draw(field(ctype, clean)))
    blank = b"\r\n" if clean else draw(pick([b"\r\n"] * 6 + [b"\n", b"", b"\r\n\r\n"]))
    head = b"".join(fields) + blank
    if kind == "multipart":
        delim = b"--" + boundary.strip(b'"<> ')
        children = draw(st.lists(entity(depth + 1, clean), max_size=4))
        body = draw(pick([b"", b"preamble\r\n"]))
        for child in children:
            body += delim + draw(pick([b"\r\n", b"\n", b" \r\n", b"x\r\n"])) + child + b"\r\n"
        body += draw(pick([delim + b"--\r\n", delim + b"--", b"", delim + b"\r\n"]))
        body += draw(pick([b"", b"epilogue\r\n"]))
    elif kind == "message":
        body = draw(entity(depth + 1, clean))
    else:
        body = draw(pick([b"", b"line\r\n", b"a\r\nb\r\nc", b"\xff\xfe\r\n", b"x" * 100]))
    return head + body


limits = st.builds(
    mime.MimeLimits,
    max_parts=st.integers(1, 8),
    max_depth=st.integers(1, 4),
    max_addresses=st.integers(1, 4),
    max_header_lines=st.integers(1, 12),
    max_structure_bytes=st.integers(1, 4000),
    structure_floor=st.integers(1, 4000),
)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with a few bytes inserted, deleted or replaced."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 3))
        raw = raw[:at] + draw(pick([b"", b"\r", b"\n", b"\r\n", b":", b" ", b";", b'"',
                                    b"\\", b"--", b"\xff", b"\x00"])) + raw[at + cut :]  # fmt: skip
    return raw


# --------------------------------------------------------------------------- the corpus


CORPUS = {
    **bench_mime.corpus(),
    "store 200KB": bench_store.unique(bench_store.template(200_000), 1, 2),
    "imap 0": bench_imap.message(0),
    "alternative": test_mime.ALTERNATIVE,
    "nested": test_mime.NESTED,
    "forward": test_mime.FORWARD,
    "encoded": test_mime.ENCODED,
    "lf only": test_mime.ALTERNATIVE.replace(b"\r\n", b"\n"),
    "no blank line": b"Subject: x\r\nTo: a@b\r\n",
    "no header": b"just a body\r\n",
    "continuation first": b" folded\r\nSubject: x\r\n\r\nbody\r\n",
    "not a field": b"Subject: x\r\nnot a field\r\nTo: a@b\r\n\r\nbody\r\n",
    "colon on a continuation": b"T \r\n :, \r\n\r\n",  # not a field, even unfolded
    "after a bad line": b"A: x\r\nbad\r\n y\r\nB: z\r\n\r\nbody\r\n",
    "empty": b"",
    "blank only": b"\r\n\r\n",
    "many parts": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 2000,
    "many addresses": b"To: " + b"a@b.test," * 3000 + b"c@d\r\n\r\nbody\r\n",
    "long phrase": b"To: " + b"word " * 5000 + b"<a@b.test>\r\n\r\nbody\r\n",
    "many fields": b"X-Field: 1\r\n" * 12_000 + b"Subject: late\r\n\r\nbody\r\n",
    "huge subject": b"Subject: " + b"s" * 200_000 + b"\r\n\r\nbody\r\n",
    "deep": b"Content-Type: message/rfc822\r\n\r\n" * 60 + b"Subject: deep\r\n\r\nx\r\n",
    "deep multipart": b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(60)
    ),
    **{f"eml {p.name}": p.read_bytes() for p in sorted(EML.glob("*.eml"))},
    **{f"eml {p.name} crlf": mime.normalize_newlines(p.read_bytes())
       for p in sorted(EML.glob("*.eml"))},
}  # fmt: skip


@pytest.mark.parametrize("name", CORPUS)
def test_corpus(name: str) -> None:
    same(CORPUS[name])


@pytest.mark.parametrize("name", ["many parts", "many addresses", "long phrase", "alternative",
                                  "nested", "forward", "encoded", "deep"])  # fmt: skip
@pytest.mark.parametrize(
    "lim",
    [
        mime.MimeLimits(max_parts=1),
        mime.MimeLimits(max_parts=3, max_depth=2),
        mime.MimeLimits(max_addresses=1),
        mime.MimeLimits(max_header_lines=2),
        mime.MimeLimits(max_header_lines=5),
        mime.MimeLimits(max_structure_bytes=300, structure_floor=1),
        mime.MimeLimits(max_structure_bytes=50, structure_floor=1),
    ],
)
def test_corpus_under_limits(name: str, lim: mime.MimeLimits) -> None:
    same(CORPUS[name], lim)


def test_a_boundary_in_rfc2231_pieces_it_cannot_order_is_no_boundary() -> None:
    """The implementation before the fast paths raised TypeError here (from the email
    package), failing the delivery; now the multipart is unusable: text/plain."""
    raw = b"Content-Type: multipart/mixed; boundary*=utf-8''x; boundary*0=x\r\n\r\n--x\r\n"
    with pytest.raises(TypeError):
        ref.analyze(raw)
    assert mime.analyze(raw).body[:3] == ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"]]


def test_other_parameters_in_rfc2231_pieces_it_cannot_order_are_no_boundary_too() -> None:
    """Found by the mutated messages: ``name*`` next to ``name*0`` on an inner multipart;
    reading its boundary decodes every parameter, and the email package raised."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           b"Content-Type: multipart/mixed; name*=utf-8''%C3%A9; name*0=a; name*1=b\r\n"
           b"\r\n\r\n--B--\r\n")
    with pytest.raises(TypeError):
        ref.analyze(raw)
    same(raw)  # the difference allowed: ours reads the inner part as text/plain
    inner = mime.analyze(raw).body[0]
    assert isinstance(inner, list) and inner[:2] == ["TEXT", "PLAIN"]


def test_the_benchmark_messages_take_the_fast_paths() -> None:
    """What the delivery benchmarks send is what the fast paths are for: a change that
    sends them down the general path is a performance bug."""
    for name in ("smtp-source 2KB", "store 2KB", "alternative", "attachment"):
        raw = CORPUS[name]
        fields, _ = mime.parse_header(raw, 0, len(raw))
        assert mime_fastpath.header_fields(raw, 0, len(raw), 100) is not None, name
        h = {k.lower(): v for k, v in reversed(fields)}
        for key in ("from", "to"):
            assert mime_fastpath.addresses(h[key], 10) is not None, (name, key)
        got = mime_fastpath.content(
            h.get("content-type"), h.get("content-disposition"), "text/plain"
        )
        assert got is not None, name


# --------------------------------------------------------------------------- generated


@examples(600)
@given(entity(), st.one_of(st.just(mime.LIMITS), limits))
def test_generated_messages(raw: bytes, lim: mime.MimeLimits) -> None:
    same(raw, lim)


@examples(300)
@given(st.data(), st.sampled_from(sorted(set(CORPUS) - {"store 200KB", "many fields",
                                                          "huge subject"})))  # fmt: skip
def test_mutated_corpus(data: st.DataObject, name: str) -> None:
    same(data.draw(mutated(CORPUS[name])))


@examples(300)
@given(st.data(), entity())
def test_mutated_generated_messages(data: st.DataObject, raw: bytes) -> None:
    same(data.draw(mutated(raw)))


@examples(300)
@given(st.binary(max_size=400))
def test_any_bytes(raw: bytes) -> None:
    same(raw)


@examples(1000)
@given(address_value(), st.integers(1, 5))
def test_addresses(value: bytes, limit: int) -> None:
    text = value.decode("utf-8", "surrogateescape")
    assert mime.addresses(text, limit) == ref.addresses(text, limit)


@examples(1000)
@given(
    st.one_of(st.none(), content_value(CONTENT_TYPES)),
    st.one_of(st.none(), content_value(DISPOSITIONS)),
    st.sampled_from(["text/plain", "message/rfc822"]),
)
def test_content_fields(ctype: bytes | None, dsp: bytes | None, default: str) -> None:
    """Content-Type and Content-Disposition as the email package reads them."""
    fields = [
        (name, value.decode("utf-8", "surrogateescape").strip(" \t"))
        for name, value in (("Content-Type", ctype), ("Content-Disposition", dsp))
        if value is not None
    ]
    h = dict((k.lower(), v) for k, v in fields)
    m = ref._mime(fields, default)
    dsp_type = m.get_content_disposition() if dsp is not None else None
    try:
        boundary = m.get_boundary()
    except TypeError:  # see same()
        boundary = None
    expected = (
        m.get_content_type(),
        ref._params(m, "content-type"),
        boundary,
        dsp_type or "",
        ref._params(m, "content-disposition") if dsp_type else None,
    )
    assert mime._content(h, fields, default) == expected
    simple = mime_fastpath.content(h.get("content-type"), h.get("content-disposition"), default)
    assert simple is None or simple == expected


@examples(600)
@given(st.lists(field(), max_size=8), pick([*EOLS, b""]), st.integers(1, 12), st.integers(0, 3))
def test_header_blocks(fields: list[bytes], blank: bytes, max_lines: int, skip: int) -> None:
    raw = b"x" * skip + b"".join(fields) + blank + b"body\r\n"
    assert mime.parse_header(raw, skip, len(raw), max_lines) == ref.parse_header(
        raw, skip, len(raw), max_lines
    )


HEADER_LINES = [
    b"Subject: x", b"To: a@b.test", b"Content-Type: text/plain; charset=utf-8", b"X-A:",
    b"X-B :y", b"X-C\t: z", b" folded", b"\tfolded", b"  ", b" :, ", b"T ", b"no colon",
    b": empty name", b"T : x", b"Bad Name: x", b"\xc3\xa9: x", b"X: \xc3\xa9", b"X: \xff",
    b"X:\x00", b"From: A <a@b>", b" <c@d>", b"Content-Type: multipart/mixed;", b' boundary="B"',
    b"-", b"\x7f: x", b"~: x",
]  # fmt: skip


@examples(1000)
@given(st.lists(pick(HEADER_LINES), max_size=8), st.integers(1, 10), st.binary(max_size=3))
def test_crlf_header_lines(lines: list[bytes], max_lines: int, tail: bytes) -> None:
    """Header blocks of CRLF lines, the fast path's, with lines that are not fields,
    continuations where none may be, names with spaces: as the general path reads them."""
    raw = b"".join(line + b"\r\n" for line in lines) + b"\r\n--B\r\nbody\r\n" + tail
    assert mime.parse_header(raw, 0, len(raw), max_lines) == ref.parse_header(
        raw, 0, len(raw), max_lines
    )
    same(raw)
