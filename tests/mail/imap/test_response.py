"""Response rendering: strings, lists, ENVELOPE and BODYSTRUCTURE from RFC 3501 examples."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from clustermail.mail.imap import response as r
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.response import Atom, Literal, Nested, Raw, RenderError

# RFC 3501 §8 sample FETCH response, split into its pieces.
GRAY = ["Terry Gray", None, "gray", "cac.washington.edu"]
RFC_ENVELOPE: list[Nested] = [
    "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    "IMAP4rev1 WG mtg summary and minutes",
    [GRAY],
    [GRAY],
    [GRAY],
    [[None, None, "imap", "cac.washington.edu"]],
    [[None, None, "minutes", "CNRI.Reston.VA.US"], ["John Klensin", None, "KLENSIN", "MIT.EDU"]],
    None,
    None,
    "<B27397-0100000@cac.washington.edu>",
]
RFC_ENVELOPE_WIRE = (
    b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'((NIL NIL "imap" "cac.washington.edu")) '
    b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
    b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
)
TEXT_PLAIN: list[Nested] = ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 3028, 92]


def test_rfc_envelope() -> None:
    assert r.render_envelope(RFC_ENVELOPE) == RFC_ENVELOPE_WIRE


def test_rfc_body() -> None:
    assert r.render_bodystructure(TEXT_PLAIN) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    )


def test_rfc_multipart_bodystructure_has_no_space_between_parts() -> None:
    body: list[Nested] = [
        ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 1152, 23],
        [
            "TEXT",
            "PLAIN",
            ["CHARSET", "US-ASCII", "NAME", "cc.diff"],
            "<960723163407.20117h@cac.washington.edu>",
            "Compiler diff",
            "BASE64",
            4554,
            73,
        ],
        "MIXED",
    ]
    assert r.render_bodystructure(body) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )


EXTENDED: list[Nested] = [
    [
        "text",
        "plain",
        ["charset", "utf-8"],
        None,
        None,
        "quoted-printable",
        120,
        4,
        None,
        None,
        None,
        None,
    ],
    [
        "image",
        "png",
        None,
        "<img1>",
        None,
        "base64",
        5000,
        "md5sum",
        ["attachment", ["filename", "a.png"]],
        ["en", "de"],
        "http://x/a.png",
    ],
    [
        "message",
        "rfc822",
        None,
        None,
        None,
        "7bit",
        900,
        RFC_ENVELOPE,
        ["text", "html", None, None, None, "8bit", 300, 10, None, ["inline", None], "fr", None],
        30,
        None,
        None,
        None,
        None,
    ],
    "mixed",
    ["boundary", "xyz"],
    None,
    None,
    None,
]


def test_extended_bodystructure_keeps_extension_fields() -> None:
    wire = r.render_bodystructure(EXTENDED)
    assert wire == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 120 4 NIL NIL NIL NIL)'
        b'("image" "png" NIL "<img1>" NIL "base64" 5000 "md5sum" '
        b'("attachment" ("filename" "a.png")) ("en" "de") "http://x/a.png")'
        b'("message" "rfc822" NIL NIL NIL "7bit" 900 ' + RFC_ENVELOPE_WIRE + b" "
        b'("text" "html" NIL NIL NIL "8bit" 300 10 NIL ("inline" NIL) "fr" NIL) 30 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "xyz") NIL NIL NIL)'
    )


def test_body_drops_extension_fields_at_every_level() -> None:
    assert r.render_bodystructure(EXTENDED, extensible=False) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 120 4)'
        b'("image" "png" NIL "<img1>" NIL "base64" 5000)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 900 ' + RFC_ENVELOPE_WIRE + b" "
        b'("text" "html" NIL NIL NIL "8bit" 300 10) 30) "mixed")'
    )


def test_empty_lists_are_nil_where_the_grammar_wants_it() -> None:
    env: list[Nested] = [None, None, [], None, None, None, None, None, None, None]
    assert r.render_envelope(env) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    body: list[Nested] = ["APPLICATION", "OCTET-STREAM", [], None, None, "BASE64", 0]
    assert r.render_bodystructure(body) == (
        b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 0)'
    )


def test_group_syntax_in_envelope_passes_through() -> None:
    group: list[Nested] = [[None, None, "undisclosed", None], [None, None, None, None]]
    env: list[Nested] = [None, None, None, None, None, group, None, None, None, None]
    assert b'((NIL NIL "undisclosed" NIL)(NIL NIL NIL NIL))' in r.render_envelope(env)


def test_8bit_header_values_become_literals() -> None:
    env: list[Nested] = ["date", "Grüße", None, None, None, None, None, None, None, None]
    assert r.render_envelope(env).startswith(b'("date" {7}\r\nGr\xc3\xbc\xc3\x9fe NIL')


BAD_SHAPES: list[tuple[object, str]] = [
    ([], "non-empty"),
    (["TEXT", "PLAIN", None, None, None, "7BIT"], "starts with type"),
    (["TEXT", "PLAIN", None, None, None, "7BIT", 10], "line count"),
    (["TEXT", "PLAIN", ["CHARSET"], None, None, "7BIT", 10, 1], "flat"),
    (["TEXT", "PLAIN", None, None, None, None, 10, 1], "encoding"),
    (["TEXT", "PLAIN", None, None, None, "7BIT", -1, 1], "size"),
    (["TEXT", "PLAIN", None, None, None, "7BIT", True, 1], "size"),
    (["MESSAGE", "RFC822", None, None, None, "7BIT", 10, None, None, 1], "envelope"),
    ([["TEXT", "PLAIN", None, None, None, "7BIT", 1, 1]], "subtype"),
    ([["TEXT", "PLAIN", None, None, None, "7BIT", 1, 1], 5], "subtype"),
]


@pytest.mark.parametrize(("shape", "message"), BAD_SHAPES)
def test_bad_bodystructure_shapes_are_render_errors(shape: list[Nested], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        r.render_bodystructure(shape)


def test_bad_envelopes_are_render_errors() -> None:
    with pytest.raises(RenderError, match="10 fields"):
        r.render_envelope([None] * 9)
    with pytest.raises(RenderError, match="address"):
        r.render_envelope([None, None, [["a", None, "b"]], *([None] * 7)])
    with pytest.raises(RenderError, match="string or None"):
        r.render_envelope([5, *([None] * 9)])


# ------------------------------------------------------------------ strings

STRINGS: list[tuple[str | bytes, bytes]] = [
    ("hello", b'"hello"'),
    ("", b'""'),
    ('say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
    ("tab\there", b'"tab\there"'),
    ("two\r\nlines", b"{10}\r\ntwo\r\nlines"),
    ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),
    (b"nul\x00", b"{4}\r\nnul\x00"),
    ("x" * r.MAX_QUOTED, b'"' + b"x" * r.MAX_QUOTED + b'"'),
    ("x" * (r.MAX_QUOTED + 1), b"{1025}\r\n" + b"x" * 1025),
]


@pytest.mark.parametrize(("value", "wire"), STRINGS)
def test_string_chooses_quoted_or_literal(value: str | bytes, wire: bytes) -> None:
    assert r.string(value) == wire


def test_astring_nstring_and_mailbox() -> None:
    assert r.astring("INBOX") == b"INBOX"
    assert r.astring("a]b") == b"a]b"
    assert r.astring("nil") == b'"nil"'
    assert r.astring("two words") == b'"two words"'
    assert r.astring("") == b'""'
    assert r.nstring(None) == b"NIL"
    assert r.mailbox("~peter/mail/台北/日本語") == b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert r.mailbox("A & B") == b'"A &- B"'


def test_quoted_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(RenderError):
        r.quoted("a\r\nb")
    assert r.quoted("a") == b'"a"'
    assert r.literal("ab") == b"{2}\r\nab"


def test_render_generic_values() -> None:
    value = [None, 0, 42, "s", b"b", Atom("\\Seen"), Literal(b"x"), Raw(b"(RAW)"), [[], ("t",)]]
    assert r.render(value) == b'(NIL 0 42 "s" "b" \\Seen {1}\r\nx (RAW) (() ("t")))'
    with pytest.raises(RenderError):
        r.render(-1)
    with pytest.raises(RenderError):
        r.render(True)
    with pytest.raises(RenderError):
        Atom("two words")


def test_date_time() -> None:
    pdt = timezone(timedelta(hours=-7))
    assert r.format_date_time(datetime(1996, 7, 17, 2, 44, 25, tzinfo=pdt)) == (
        "17-Jul-1996 02:44:25 -0700"
    )
    assert r.date_time(datetime(2024, 2, 1, 9, 5, 0)) == b'"01-Feb-2024 09:05:00 +0000"'
    ist = timezone(timedelta(hours=5, minutes=30))
    assert r.format_date_time(datetime(2024, 2, 1, tzinfo=ist)).endswith("+0530")


# -------------------------------------------------------------------- FETCH


def test_rfc_fetch_response() -> None:
    pdt = timezone(timedelta(hours=-7))
    line = r.render_fetch(
        12,
        [
            ("FLAGS", Raw(r.flag_list(["\\Seen"]))),
            ("INTERNALDATE", Raw(r.date_time(datetime(1996, 7, 17, 2, 44, 25, tzinfo=pdt)))),
            ("RFC822.SIZE", 4286),
            ("ENVELOPE", Raw(r.render_envelope(RFC_ENVELOPE))),
            ("BODY", Raw(r.render_bodystructure(TEXT_PLAIN, extensible=False))),
        ],
    )
    assert line == (
        b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" '
        b"RFC822.SIZE 4286 ENVELOPE " + RFC_ENVELOPE_WIRE + b" "
        b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))\r\n'
    )


def test_fetch_body_sections_are_literals_and_nil() -> None:
    line = r.render_fetch(
        3, [("UID", 7), ("BODY[1.TEXT]<0>", b"Hi\r\n"), ("BODY[2]", None), ("BODY[3]", b"ok")]
    )
    assert line == b'* 3 FETCH (UID 7 BODY[1.TEXT]<0> {4}\r\nHi\r\n BODY[2] NIL BODY[3] "ok")\r\n'
    with pytest.raises(RenderError):
        r.render_fetch(1, [("BAD\r\nNAME", 1)])


# ---------------------------------------------------------- status responses


def test_status_responses_and_codes() -> None:
    assert r.tagged("a1", "OK", "SELECT completed", r.READ_WRITE) == (
        b"a1 OK [READ-WRITE] SELECT completed\r\n"
    )
    assert r.untagged_status("OK", "UIDs valid", r.code_uidvalidity(3857529045)) == (
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    )
    assert r.untagged_status("OK", "x", r.code_uidnext(4392)) == b"* OK [UIDNEXT 4392] x\r\n"
    assert r.untagged_status("OK", "x", r.code_unseen(12)) == b"* OK [UNSEEN 12] x\r\n"
    assert r.code_permanentflags(["\\Deleted", "\\Seen"]) == "PERMANENTFLAGS (\\Deleted \\Seen \\*)"
    assert r.code_permanentflags([], new_keywords=False) == "PERMANENTFLAGS ()"
    assert r.code_appenduid(38505, 3955) == "APPENDUID 38505 3955"
    assert r.code_copyuid(38505, [304, 319, 320], [3956, 3957, 3958]) == (
        "COPYUID 38505 304,319:320 3956:3958"
    )
    assert r.code_capability(["IMAP4rev1", "IDLE"]) == "CAPABILITY IMAP4rev1 IDLE"
    assert r.code_badcharset(["US-ASCII", "UTF-8"]) == "BADCHARSET (US-ASCII UTF-8)"
    assert r.code_highestmodseq(715194045007) == "HIGHESTMODSEQ 715194045007"
    assert r.tagged("a", "NO", "no such mailbox", r.TRYCREATE) == (
        b"a NO [TRYCREATE] no such mailbox\r\n"
    )
    assert r.untagged_status("BYE", "logging out") == b"* BYE logging out\r\n"
    assert r.continuation("Ready") == b"+ Ready\r\n"
    assert r.continuation() == b"+ \r\n"


def test_response_text_cannot_forge_lines() -> None:
    line = r.tagged("a", "NO", "bad\r\n* OK [ALERT] forged")
    assert line.count(b"\r\n") == 1 and line.endswith(b"\r\n")
    assert r.tagged("a", "OK", "[not a code]") == b"a OK  [not a code]\r\n"


def test_parse_errors_render_to_one_line() -> None:
    assert r.render_parse_error(ParseError("unknown command FOO", tag="a1")) == (
        b"a1 BAD unknown command FOO\r\n"
    )
    assert r.render_parse_error(ParseError("empty command")) == b"* BAD empty command\r\n"
    too_big = ParseError("message too big", tag="a2", status="NO", code="TOOBIG")
    assert r.render_parse_error(too_big) == b"a2 NO [TOOBIG] message too big\r\n"


def test_untagged_data() -> None:
    assert r.capability_data(["IMAP4rev1", "LITERAL+"]) == b"* CAPABILITY IMAP4rev1 LITERAL+\r\n"
    assert r.exists(172) == b"* 172 EXISTS\r\n"
    assert r.recent(1) == b"* 1 RECENT\r\n"
    assert r.expunge(3) == b"* 3 EXPUNGE\r\n"
    assert r.flags_data(["\\Answered", "\\Flagged"]) == b"* FLAGS (\\Answered \\Flagged)\r\n"
    assert r.search_data([2, 84, 882]) == b"* SEARCH 2 84 882\r\n"
    assert r.search_data([]) == b"* SEARCH\r\n"
    assert r.search_data([1], highest_modseq=9) == b"* SEARCH 1 (MODSEQ 9)\r\n"
    # Past the shared cache of decimal forms, and growing it, give the same text.
    assert r.search_data([5000, 4_000_000_000, 7]) == b"* SEARCH 5000 4000000000 7\r\n"
    # Out of order (results come ascending; any order still answers right): a number
    # past the table before the last one.
    assert r.search_data([3, 200_000, 5]) == b"* SEARCH 3 200000 5\r\n"
    assert r.search_data(iter(range(1, 40_001))) == (
        b"* SEARCH " + " ".join(map(str, range(1, 40_001))).encode() + b"\r\n"
    )
    assert r.list_data(["\\Noselect"], "/", "~/Mail/foo") == (
        b'* LIST (\\Noselect) "/" ~/Mail/foo\r\n'
    )
    assert r.list_data([], None, "Entwürfe", command="LSUB") == (b"* LSUB () NIL Entw&APw-rfe\r\n")
    assert r.status_data("blurdybloop", [("MESSAGES", 231), ("UIDNEXT", 44292)]) == (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    )
    assert r.enabled_data(["CONDSTORE"]) == b"* ENABLED CONDSTORE\r\n"
    assert r.enabled_data([]) == b"* ENABLED\r\n"
    assert r.id_data(None) == b"* ID NIL\r\n"
    assert r.id_data([("name", "clustermail"), ("os", None)]) == (
        b'* ID ("name" "clustermail" "os" NIL)\r\n'
    )
    assert r.namespace_data([("", "/")], None, [("Public/", "/")]) == (
        b'* NAMESPACE (("" "/")) NIL (("Public/" "/"))\r\n'
    )
    assert r.quota_data("", [("STORAGE", 10, 512)]) == b'* QUOTA "" (STORAGE 10 512)\r\n'
    assert r.quotaroot_data("INBOX", [""]) == b'* QUOTAROOT INBOX ""\r\n'
    assert r.untagged(5, Atom("EXISTS")) == b"* 5 EXISTS\r\n"
