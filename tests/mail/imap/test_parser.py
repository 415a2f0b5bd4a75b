"""Table-driven grammar tests: RFC examples and their extensions, valid and invalid."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import search as s
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.lexer import Reader
from clustermail.mail.imap.parser import (
    MAX_SEARCH_DEPTH,
    parse_auth_response,
    parse_command,
    parse_idle_done,
)
from clustermail.mail.imap.sequence import SequenceSet


def S(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


def F(name: c.FetchName) -> c.FetchAttribute:
    return c.FetchAttribute(name)


FAST = (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"))
PST = timezone(timedelta(hours=-7))

VALID: list[tuple[bytes, c.Command]] = [
    # RFC 3501 §6.1 any state
    (b"a001 CAPABILITY", c.Capability("a001")),
    (b"a002 noop", c.Noop("a002")),
    (b"A023 LOGOUT", c.Logout("A023")),
    # §6.2 not authenticated
    (b"a002 STARTTLS", c.StartTLS("a002")),
    (b"A001 AUTHENTICATE GSSAPI", c.Authenticate("A001", "GSSAPI")),
    (b"a001 login SMITH SESAME", c.Login("a001", "SMITH", "SESAME")),
    (b'a1 LOGIN "fred" "pa\\"ss\\\\word"', c.Login("a1", "fred", 'pa"ss\\word')),
    (b"a1 LOGIN {4}\r\nfred {3+}\r\nx y", c.Login("a1", "fred", "x y")),
    (b'a1 LOGIN "" ""', c.Login("a1", "", "")),
    ('a1 LOGIN "jörg" {9}\r\npässword'.encode(), c.Login("a1", "jörg", "pässword")),
    # SASL-IR (RFC 4959)
    (
        b"a AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=",
        c.Authenticate("a", "PLAIN", b"test\x00test\x00test"),
    ),
    (b"a AUTHENTICATE plain =", c.Authenticate("a", "PLAIN", b"")),
    # §6.3 authenticated
    (b"A142 SELECT INBOX", c.Select("A142", "INBOX")),
    (b"A142 SELECT inBox", c.Select("A142", "INBOX")),
    (b"A932 EXAMINE blurdybloop", c.Select("A932", "blurdybloop", read_only=True)),
    (b"a SELECT INBOX (CONDSTORE)", c.Select("a", "INBOX", condstore=True)),
    (b"A003 CREATE owatagusiam/", c.Create("A003", "owatagusiam/")),
    (b"A683 DELETE blurdybloop", c.Delete("A683", "blurdybloop")),
    (b"A683 RENAME blurdybloop sarasoop", c.Rename("A683", "blurdybloop", "sarasoop")),
    (b"A002 SUBSCRIBE #news.comp.mail.mime", c.Subscribe("A002", "#news.comp.mail.mime")),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime", c.Unsubscribe("A002", "#news.comp.mail.mime")),
    (b"a SELECT &ZeVnLIqe-", c.Select("a", "日本語")),
    (b'a SELECT "Entw&APw-rfe &- Co"', c.Select("a", "Entwürfe & Co")),
    (b"a SELECT foo]bar", c.Select("a", "foo]bar")),
    (b'A101 LIST "" ""', c.List("A101", "", ("",))),
    (b'A102 LIST #news.comp.mail.misc ""', c.List("A102", "#news.comp.mail.misc", ("",))),
    (b"A202 LIST ~/Mail/ %", c.List("A202", "~/Mail/", ("%",))),
    (b'a LIST "" *', c.List("a", "", ("*",))),
    (b"a LIST foo/ bar*]%", c.List("a", "foo/", ("bar*]%",))),
    (b'A002 LSUB "#news." "comp.mail.*"', c.Lsub("A002", "#news.", "comp.mail.*")),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
        c.Status("A042", "blurdybloop", ("UIDNEXT", "MESSAGES")),
    ),
    (
        b"a STATUS INBOX (messages recent uidnext uidvalidity unseen highestmodseq size)",
        c.Status(
            "a",
            "INBOX",
            ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"),
        ),
    ),
    (
        b"A003 APPEND saved-messages (\\Seen) {12}\r\nHi\r\n\r\nthere.",
        c.Append("A003", "saved-messages", ("\\Seen",), None, b"Hi\r\n\r\nthere."),
    ),
    (
        b'A003 APPEND INBOX (\\seen $Forwarded) " 7-Feb-1994 21:52:25 -0800" {1+}\r\nx',
        c.Append(
            "A003",
            "INBOX",
            ("\\Seen", "$Forwarded"),
            datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8))),
            b"x",
        ),
    ),
    (
        b'a APPEND INBOX "17-Jul-1996 02:44:25 +0000" {0}\r\n',
        c.Append("a", "INBOX", (), datetime(1996, 7, 17, 2, 44, 25, tzinfo=UTC), b""),
    ),
    (b"a APPEND INBOX () {2}\r\nab", c.Append("a", "INBOX", (), None, b"ab")),
    # §6.4 selected
    (b"FXXZ CHECK", c.Check("FXXZ")),
    (b"A341 CLOSE", c.Close("A341")),
    (b"A202 EXPUNGE", c.Expunge("A202")),
    (b"A654 FETCH 2:4 (FLAGS)", c.Fetch("A654", S("2:4"), (F("FLAGS"),))),
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        c.Fetch(
            "A654",
            S("2:4"),
            (F("FLAGS"), c.BodySection(c.Section((), "HEADER.FIELDS", ("DATE", "FROM")))),
        ),
    ),
    (b"a FETCH 1 fast", c.Fetch("a", S("1"), FAST)),
    (b"a FETCH 1 ALL", c.Fetch("a", S("1"), (*FAST, F("ENVELOPE")))),
    (b"a FETCH 1 FULL", c.Fetch("a", S("1"), (*FAST, F("ENVELOPE"), F("BODY")))),
    (b"a FETCH *:4 BODY", c.Fetch("a", S("*:4"), (F("BODY"),))),
    (
        b"a FETCH 1,3:5,7:* (UID RFC822 RFC822.HEADER RFC822.TEXT RFC822.SIZE "
        b"ENVELOPE BODYSTRUCTURE INTERNALDATE)",
        c.Fetch(
            "a",
            S("1,3:5,7:*"),
            (
                F("UID"),
                F("RFC822"),
                F("RFC822.HEADER"),
                F("RFC822.TEXT"),
                F("RFC822.SIZE"),
                F("ENVELOPE"),
                F("BODYSTRUCTURE"),
                F("INTERNALDATE"),
            ),
        ),
    ),
    (b"a FETCH 1 BODY[]", c.Fetch("a", S("1"), (c.BodySection(),))),
    (
        b"a FETCH 1 body.peek[]<0.2048>",
        c.Fetch("a", S("1"), (c.BodySection(peek=True, partial=c.Partial(0, 2048)),)),
    ),
    (
        b"a FETCH 1 (BODY[1.2.3] BODY[2.MIME] BODY[3.TEXT] BODY[4.header] BODY[TEXT])",
        c.Fetch(
            "a",
            S("1"),
            (
                c.BodySection(c.Section((1, 2, 3))),
                c.BodySection(c.Section((2,), "MIME")),
                c.BodySection(c.Section((3,), "TEXT")),
                c.BodySection(c.Section((4,), "HEADER")),
                c.BodySection(c.Section((), "TEXT")),
            ),
        ),
    ),
    (
        b'a FETCH 1 BODY.PEEK[1.HEADER.FIELDS.NOT ("Subject" {2}\r\nTo)]',
        c.Fetch(
            "a",
            S("1"),
            (c.BodySection(c.Section((1,), "HEADER.FIELDS.NOT", ("SUBJECT", "TO")), peek=True),),
        ),
    ),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)",
        c.Store("A003", S("2:4"), "add", ("\\Deleted",)),
    ),
    (
        b"a STORE 1 -flags.silent \\Seen \\FLAGGED kw",
        c.Store("a", S("1"), "remove", ("\\Seen", "\\Flagged", "kw"), silent=True),
    ),
    (b"a STORE 1:* FLAGS ()", c.Store("a", S("1:*"), "replace", ())),
    (b"A003 COPY 2:4 MEETING", c.Copy("A003", S("2:4"), "MEETING")),
    (b"a MOVE 1 Trash", c.Move("a", S("1"), "Trash")),
    (
        b"A999 UID FETCH 4827313:4828442 FLAGS",
        c.Fetch("A999", S("4827313:4828442"), (F("FLAGS"),), uid=True),
    ),
    (
        b"a uid store 1 FLAGS.SILENT (\\Seen)",
        c.Store("a", S("1"), "replace", ("\\Seen",), silent=True, uid=True),
    ),
    (b"a UID COPY 1:3 x", c.Copy("a", S("1:3"), "x", uid=True)),
    (b"a UID MOVE 42:69 foo", c.Move("a", S("42:69"), "foo", uid=True)),
    (b"A003 UID EXPUNGE 3000:3002", c.Expunge("A003", S("3000:3002"))),
    (b"a UID SEARCH ALL", c.Search("a", s.AllKey(), uid=True)),
    # extensions
    (
        b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")',
        c.Id(
            "a023",
            (("name", "sodr"), ("version", "19.34"), ("vendor", "Pink Floyd Music Limited")),
        ),
    ),
    (b"a ID NIL", c.Id("a", None)),
    (b'a ID ("os" NIL)', c.Id("a", (("os", None),))),
    (b"t2 ENABLE CONDSTORE X-GOOD-IDEA", c.Enable("t2", ("CONDSTORE", "X-GOOD-IDEA"))),
    (b"a ENABLE utf8=accept", c.Enable("a", ("UTF8=ACCEPT",))),
    (b"A002 IDLE", c.Idle("A002")),
    (b"A001 NAMESPACE", c.Namespace("A001")),
    (b"A342 UNSELECT", c.Unselect("A342")),
    (
        b'G0001 GETQUOTA "!partition.sda4"',
        c.GetQuota("G0001", "!partition.sda4"),
    ),
    (b"A003 GETQUOTAROOT INBOX", c.GetQuotaRoot("A003", "INBOX")),
    (b'S0000 SETQUOTA "" (STORAGE 512)', c.SetQuota("S0000", "", (("STORAGE", 512),))),
    (b"S SETQUOTA r (storage 1 MESSAGE 2)", c.SetQuota("S", "r", (("STORAGE", 1), ("MESSAGE", 2)))),
    (b"S SETQUOTA r ()", c.SetQuota("S", "r", ())),
    # SPECIAL-USE (RFC 6154) and LIST-EXTENDED (RFC 5258)
    (
        b't1 LIST (SPECIAL-USE) "" "*"',
        c.List("t1", "", ("*",), selection=frozenset({"SPECIAL-USE"}), extended=True),
    ),
    (
        b't3 LIST "" "%" RETURN (SPECIAL-USE)',
        c.List("t3", "", ("%",), returns=frozenset({"SPECIAL-USE"}), extended=True),
    ),
    (
        b"t2 CREATE MySpecial (USE (\\drafts \\Sent))",
        c.Create("t2", "MySpecial", ("\\Drafts", "\\Sent")),
    ),
    (b'A01 LIST "" (% %/%)', c.List("A01", "", ("%", "%/%"), extended=True)),
    (
        b'A02 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)',
        c.List(
            "A02",
            "",
            ("%",),
            selection=frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
            returns=frozenset({"CHILDREN"}),
            extended=True,
        ),
    ),
    (
        b'a LIST () "" % RETURN (STATUS (MESSAGES UNSEEN) SUBSCRIBED)',
        c.List(
            "a",
            "",
            ("%",),
            returns=frozenset({"STATUS", "SUBSCRIBED"}),
            status_items=("MESSAGES", "UNSEEN"),
            extended=True,
        ),
    ),
    # CONDSTORE room (RFC 7162)
    (
        b"a103 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
        c.Fetch("a103", S("1:*"), (F("FLAGS"),), uid=True, changed_since=12345),
    ),
    (
        b"a UID FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 1 VANISHED)",
        c.Fetch("a", S("1:*"), (F("FLAGS"), F("MODSEQ")), uid=True, changed_since=1, vanished=True),
    ),
    (
        b"a STORE 1 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)",
        c.Store("a", S("1"), "add", ("\\Deleted",), silent=True, unchanged_since=12121230045),
    ),
    # odd but valid tags
    (b"]tag NOOP", c.Noop("]tag")),
    (b"a.b-c_1 NOOP", c.Noop("a.b-c_1")),
    (b"a APPEND INBOX {4}\r\nab\r\n", c.Append("a", "INBOX", (), None, b"ab\r\n")),
]


@pytest.mark.parametrize(
    ("raw", "expected"), VALID, ids=[v[0][:40].decode(errors="replace") for v in VALID]
)
def test_valid_commands(raw: bytes, expected: c.Command) -> None:
    assert parse_command(raw) == expected


SEARCHES: list[tuple[bytes, s.SearchKey]] = [
    (
        b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        s.AndKey(
            (
                s.FlagKey("\\Flagged"),
                s.DateKey("internal", "since", date(1994, 2, 1)),
                s.NotKey(s.HeaderKey("FROM", "Smith")),
            )
        ),
    ),
    (b'TEXT "string not in mailbox"', s.TextKey("string not in mailbox")),
    (b"CHARSET UTF-8 TEXT {6}\r\nXXXXXX", s.TextKey("XXXXXX")),
    ("CHARSET utf-8 SUBJECT {5}\r\nbüro".encode(), s.HeaderKey("SUBJECT", "büro")),
    (b"ALL", s.AllKey()),
    (b"1:*", s.SequenceKey(S("1:*"))),
    (b"2,4:* UID 10:20", s.AndKey((s.SequenceKey(S("2,4:*")), s.UidKey(S("10:20"))))),
    (b"answered", s.FlagKey("\\Answered")),
    (b"UNANSWERED", s.NotKey(s.FlagKey("\\Answered"))),
    (b"DELETED UNDELETED", s.AndKey((s.FlagKey("\\Deleted"), s.NotKey(s.FlagKey("\\Deleted"))))),
    (b"DRAFT", s.FlagKey("\\Draft")),
    (b"UNDRAFT", s.NotKey(s.FlagKey("\\Draft"))),
    (b"UNFLAGGED", s.NotKey(s.FlagKey("\\Flagged"))),
    (b"SEEN", s.FlagKey("\\Seen")),
    (b"UNSEEN", s.NotKey(s.FlagKey("\\Seen"))),
    (b"RECENT", s.FlagKey("\\Recent")),
    (b"NEW", s.AndKey((s.FlagKey("\\Recent"), s.NotKey(s.FlagKey("\\Seen"))))),
    (b"OLD", s.NotKey(s.FlagKey("\\Recent"))),
    (b"KEYWORD $Junk", s.FlagKey("$Junk")),
    (b"UNKEYWORD foo", s.NotKey(s.FlagKey("foo"))),
    (
        b"BCC a CC b TO c",
        s.AndKey((s.HeaderKey("BCC", "a"), s.HeaderKey("CC", "b"), s.HeaderKey("TO", "c"))),
    ),
    (b'HEADER Message-ID "<x@y>"', s.HeaderKey("MESSAGE-ID", "<x@y>")),
    (b'HEADER X-Spam ""', s.HeaderKey("X-SPAM", "")),
    (b"BODY hello", s.BodyKey("hello")),
    (b'BEFORE "1-Jan-2000"', s.DateKey("internal", "before", date(2000, 1, 1))),
    (b"ON 31-dec-1999", s.DateKey("internal", "on", date(1999, 12, 31))),
    (b"SENTBEFORE 1-Jan-2000", s.DateKey("sent", "before", date(2000, 1, 1))),
    (b"SENTON 01-Jan-2000", s.DateKey("sent", "on", date(2000, 1, 1))),
    (b"SENTSINCE 1-Jan-2000", s.DateKey("sent", "since", date(2000, 1, 1))),
    (
        b"LARGER 1024 SMALLER 4096",
        s.AndKey((s.SizeKey("larger", 1024), s.SizeKey("smaller", 4096))),
    ),
    (
        b"OR (SEEN FLAGGED) NOT OR 1 2",
        s.OrKey(
            s.AndKey((s.FlagKey("\\Seen"), s.FlagKey("\\Flagged"))),
            s.NotKey(s.OrKey(s.SequenceKey(S("1")), s.SequenceKey(S("2")))),
        ),
    ),
    (b"(((ALL)))", s.AllKey()),
    (b"MODSEQ 620162338", s.ModSeqKey(620162338)),
    (b'MODSEQ "/flags/\\\\draft" all 620162338', s.ModSeqKey(620162338)),
]


@pytest.mark.parametrize(
    ("criteria", "key"), SEARCHES, ids=[v[0][:40].decode(errors="replace") for v in SEARCHES]
)
def test_search_criteria(criteria: bytes, key: s.SearchKey) -> None:
    command = parse_command(b"A282 SEARCH " + criteria)
    assert isinstance(command, c.Search)
    assert command.key == key


def test_search_charset_is_recorded() -> None:
    command = parse_command(b"a SEARCH CHARSET us-ascii ALL")
    assert command == c.Search("a", s.AllKey(), charset="US-ASCII")


def test_unknown_charset_is_no_badcharset() -> None:
    with pytest.raises(ParseError) as info:
        parse_command(b"a SEARCH CHARSET KOI8-R TEXT x")
    err = info.value
    assert (err.tag, err.status) == ("a", "NO")
    assert err.code == "BADCHARSET (US-ASCII UTF-8)"


INVALID: list[tuple[bytes, str | None, str]] = [
    # (raw, tag in the error, part of the message)
    (b"", None, "empty command"),
    (b"   ", None, "empty command"),
    (b"+abc NOOP", None, "tag"),
    (b"(x NOOP", None, "tag"),
    (b"a", "a", "missing command name"),
    (b"a ", "a", "command name"),
    (b"a  NOOP", "a", "command name"),
    (b"a FOO", "a", "unknown command FOO"),
    (b"a NOOP extra", "a", "unexpected characters"),
    (b"a NOOP\r\n", "a", "unexpected characters"),
    ("a LOGIN jörg x".encode(), "a", "must be quoted or sent as a literal"),
    (b"a LOGIN fred", "a", "missing password"),
    (b"a LOGIN fred pass extra", "a", "unexpected characters"),
    (b'a LOGIN "fred pass', "a", "quoted string"),
    (b'a LOGIN "fr\\ed" x', "a", "quoted string"),
    (b"a LOGIN {10}\r\nfred x", "a", "shorter than"),
    (b"a LOGIN {99999999999}\r\nx x", "a", "too large"),
    (b"a LOGIN {3}fred x", "a", "invalid literal"),
    (b"a LOGIN \xff\xfe x", "a", "expected user name"),
    (b'a LOGIN "\xff" x', "a", "UTF-8"),
    (b"a SELECT", "a", "missing mailbox name"),
    (b"a SELECT a&b", "a", "unterminated '&'"),
    (b"a SELECT &Jjo", "a", "unterminated"),
    (b'a SELECT "caf\xc3\xa9"', "a", "modified-UTF-7"),
    (b"a SELECT INBOX (QRESYNC (1 2))", "a", "SELECT parameter"),
    (b"a SELECT INBOX ()", "a", "must not be empty"),
    (b"a CREATE x (USE (Sent))", "a", "backslash"),
    (b"a CREATE x (FOO)", "a", "unsupported CREATE parameter"),
    (b"a STATUS INBOX ()", "a", "must not be empty"),
    (b"a STATUS INBOX (MESSAGES BOGUS)", "a", "unknown STATUS item BOGUS"),
    (b"a STATUS INBOX MESSAGES", "a", "'('"),
    (b'a LIST (BOGUS) "" %', "a", "selection option BOGUS"),
    (b'a LIST (RECURSIVEMATCH) "" %', "a", "RECURSIVEMATCH"),
    (b'a LIST "" % RETURN (BOGUS)', "a", "return option BOGUS"),
    (b'a LIST "" % FOO (CHILDREN)', "a", "RETURN"),
    (b'a LIST ""', "a", "missing mailbox pattern"),
    (b"a APPEND INBOX", "a", "missing message literal"),
    (b"a APPEND INBOX hello", "a", "literal"),
    (b"a APPEND INBOX ~{2}\r\nab", "a", "binary literal"),
    (b'a APPEND INBOX "7-Feb-1994" {1}\r\nx', "a", "date-time"),
    (b'a APPEND INBOX "32-Feb-1994 21:52:25 -0800" {1}\r\nx', "a", "invalid date-time"),
    (b'a APPEND INBOX "07-Foo-1994 21:52:25 -0800" {1}\r\nx', "a", "unknown month"),
    (b'a APPEND INBOX "07-Feb-1994 25:52:25 -0800" {1}\r\nx', "a", "invalid date-time"),
    (b'a APPEND INBOX "07-Feb-1994 21:52:25 -2500" {1}\r\nx', "a", "time zone"),
    (b"a APPEND INBOX {1}\r\nx {1}\r\ny", "a", "MULTIAPPEND"),
    (b"a APPEND INBOX (\\Seen {1}\r\nx", "a", "expected flag"),
    (b"a FETCH", "a", "missing sequence set"),
    (b"a FETCH 0 FLAGS", "a", "invalid number"),
    (b"a FETCH 1: FLAGS", "a", "invalid sequence set"),
    (b"a FETCH 1,,2 FLAGS", "a", "invalid sequence set"),
    (b"a FETCH 4294967296 FLAGS", "a", "larger than"),
    (b"a FETCH 1 BOGUS", "a", "unknown FETCH item BOGUS"),
    (b"a FETCH 1 (FLAGS ALL)", "a", "macro ALL"),
    (b"a FETCH 1 ()", "a", "must not be empty"),
    (b"a FETCH 1 BODY.PEEK", "a", "needs a section"),
    (b"a FETCH 1 FLAGS[]", "a", "takes no section"),
    (b"a FETCH 1 BODY[MIME]", "a", "MIME section needs a part"),
    (b"a FETCH 1 BODY[0]", "a", "section"),
    (b"a FETCH 1 BODY[1.BOGUS]", "a", "section text"),
    (b"a FETCH 1 BODY[HEADER.FIELDS]", "a", "header field list"),
    (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "a", "must not be empty"),
    (b"a FETCH 1 BODY[TEXT", "a", "']'"),
    (b"a FETCH 1 BODY[]<0.0>", "a", "must not be zero"),
    (b"a FETCH 1 BODY[]<5>", "a", "'.'"),
    (b"a FETCH 1 (FLAGS) (VANISHED)", "a", "unsupported FETCH modifier VANISHED"),
    (b"a UID FETCH 1 (FLAGS) (VANISHED)", "a", "VANISHED needs CHANGEDSINCE"),
    (b"a STORE 1 FLAGS", "a", "missing flags"),
    (b"a STORE 1 *FLAGS (\\Seen)", "a", "FLAGS, +FLAGS or -FLAGS"),
    (b"a STORE 1 +FLAGS (\\Seen", "a", "flag list"),
    (b"a STORE 1 (UNCHANGEDSINCE x) FLAGS ()", "a", "UNCHANGEDSINCE value"),
    (b"a COPY 1", "a", "missing mailbox name"),
    (b"a UID", "a", "missing command after UID"),
    (b"a UID LOGIN x y", "a", "UID cannot be used with LOGIN"),
    (b"a UID EXPUNGE", "a", "missing UID set"),
    (b"a EXPUNGE 1:2", "a", "unexpected characters"),
    (b"a SEARCH", "a", "missing search criteria"),
    (b"a SEARCH BOGUS", "a", "unknown search key BOGUS"),
    (b"a SEARCH FROM", "a", "missing FROM string"),
    (b"a SEARCH OR SEEN", "a", "missing second key after OR"),
    (b"a SEARCH NOT", "a", "missing key after NOT"),
    (b"a SEARCH (SEEN", "a", "search key group"),
    (b"a SEARCH ()", "a", "must not be empty"),
    (b"a SEARCH SINCE 1-Feb", "a", "date"),
    (b"a SEARCH SINCE 30-Feb-2020", "a", "invalid date"),
    (b"a SEARCH SINCE 1-Bla-2020", "a", "unknown month"),
    (b'a SEARCH SINCE "1-Feb-2020', "a", "closing quote"),
    (b"a SEARCH LARGER x", "a", "LARGER size"),
    (b"a SEARCH CHARSET", "a", "missing charset name"),
    (b"a SEARCH CHARSET UTF-8", "a", "missing search criteria"),
    (b"a SEARCH SEEN  UNSEEN", "a", "search key"),
    (b'a SEARCH MODSEQ "/flags/x" bogus 5', "a", "MODSEQ entry type"),
    (b"a SEARCH " + b"NOT " * (MAX_SEARCH_DEPTH + 1) + b"ALL", "a", "nested deeper"),
    (
        b"a SEARCH " + b"(" * (MAX_SEARCH_DEPTH + 1) + b"ALL" + b")" * (MAX_SEARCH_DEPTH + 1),
        "a",
        "nested deeper",
    ),
    (b"a AUTHENTICATE", "a", "missing authentication mechanism"),
    (b"a AUTHENTICATE PLAIN abc", "a", "base64"),
    (b"a AUTHENTICATE PLAIN ab=c", "a", "base64"),
    (b"a ID", "a", "missing ID parameters"),
    (b'a ID ("a")', "a", "missing ID field value"),
    (b"a ID (name x)", "a", "string"),
    (b"a ID (" + b'"k" "v" ' * 31 + b")", "a", "too many ID fields"),
    (b"a ENABLE", "a", "missing capability"),
    (b"a SETQUOTA r (STORAGE)", "a", "missing quota limit"),
    (b"a SETQUOTA r (STORAGE 99999999999999999999)", "a", "too large"),
]


@pytest.mark.parametrize(
    ("raw", "tag", "message"), INVALID, ids=[v[0][:40].decode(errors="replace") for v in INVALID]
)
def test_invalid_commands(raw: bytes, tag: str | None, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_command(raw)
    err = info.value
    assert err.tag == tag
    assert message in err.message, err.message
    assert err.status == "BAD"
    assert not err.fatal


def test_login_repr_hides_the_password() -> None:
    command = parse_command(b"a LOGIN fred sekrit")
    assert "sekrit" not in repr(command)


def test_append_repr_hides_the_message() -> None:
    command = parse_command(b"a APPEND INBOX {6}\r\nsecret")
    assert "secret" not in repr(command)
    assert "6 bytes" in repr(command)


def test_body_section_response_names() -> None:
    command = parse_command(
        b"a FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS (from to)]<10.20> BODY[] BODY[3.MIME])"
    )
    assert isinstance(command, c.Fetch)
    names = [i.response_name() for i in command.items if isinstance(i, c.BodySection)]
    assert names == ["BODY[1.2.HEADER.FIELDS (FROM TO)]<10>", "BODY[]", "BODY[3.MIME]"]


def test_every_command_has_a_name() -> None:
    for raw, command in VALID:
        assert type(command).name, raw
    assert c.Select("a", "x", read_only=True).command_name == "EXAMINE"


@pytest.mark.parametrize("line", [b"DONE", b"done", b"DONE\r\n"])
def test_idle_done(line: bytes) -> None:
    parse_idle_done(line)


def test_idle_other_line_is_an_error() -> None:
    with pytest.raises(ParseError, match="expected DONE"):
        parse_idle_done(b"a NOOP")


def test_auth_responses() -> None:
    assert parse_auth_response(b"dGVzdA==\r\n") == b"test"
    assert parse_auth_response(b"") == b""
    assert parse_auth_response(b"*") is None
    with pytest.raises(ParseError, match="base64"):
        parse_auth_response(b"not base64!")


def test_fetch_items_parsed_once_answer_as_parsed_anew() -> None:
    from clustermail.mail.imap import parser

    parser._FETCH_ITEMS.clear()
    first = parse_command(b"a FETCH 7 (BODY.PEEK[HEADER.FIELDS (Subject)] FLAGS)")
    again = parse_command(b"b UID FETCH 9:* (BODY.PEEK[HEADER.FIELDS (Subject)] FLAGS)")
    assert isinstance(first, c.Fetch) and isinstance(again, c.Fetch)
    assert again.items is first.items  # from the kept list
    assert (again.tag, again.uid, again.sequence_set) == ("b", True, SequenceSet.parse("9:*"))
    assert first.items == (
        c.BodySection(c.Section(text="HEADER.FIELDS", fields=("SUBJECT",)), peek=True),
        c.FetchAttribute("FLAGS"),
    )
    # The same items followed by more are parsed, not taken from the kept list.
    modified = parse_command(b"c FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)] FLAGS) "
                             b"(CHANGEDSINCE 5)")
    assert isinstance(modified, c.Fetch) and modified.changed_since == 5
    with pytest.raises(ParseError):
        parse_command(b"d FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)] FLAGS) junk")
    with pytest.raises(ParseError):
        parse_command(b"e FETCH 0 (BODY.PEEK[HEADER.FIELDS (Subject)] FLAGS)")


def test_fetch_items_kept_are_bounded() -> None:
    from clustermail.mail.imap import parser

    for n in range(parser.FETCH_ITEMS_CACHED + 10):
        parse_command(b"a FETCH 1 BODY.PEEK[]<0.%d>" % (n + 1))
        assert len(parser._FETCH_ITEMS) <= parser.FETCH_ITEMS_CACHED
    fields = " ".join(f"X-Field-{n}" for n in range(30)).encode()
    parser._FETCH_ITEMS.clear()
    parse_command(b"a FETCH 1 BODY.PEEK[HEADER.FIELDS (" + fields + b")]")
    assert not parser._FETCH_ITEMS  # longer than FETCH_ITEMS_KEY: parsed every time


_FLAG_PIECES = [b"\\Seen", b"\\seen", b"\\FLAGGED", b"\\Recent", b"$Work", b"kw", b"\\", b"\\*",
                b"a]b", b"x%", b"\"q\"", b"{3}", b"\x7f", b"\xc3\xa9", b"NIL"]


@given(
    st.lists(st.sampled_from(_FLAG_PIECES), max_size=5),
    st.sampled_from([b" ", b"  ", b"\t", b""]),
    st.sampled_from([b"(", b"((", b""]),
    st.sampled_from([b")", b"))", b") ", b""]),
)
def test_simple_flag_lists_read_in_one_match_as_token_by_token(
    pieces: list[bytes], sep: bytes, opening: bytes, closing: bytes
) -> None:
    """STORE's flag list ending the command: the one-match reading accepts only what the
    token-by-token reading accepts, with the same flags, and leaves anything else to it."""
    raw = opening + sep.join(pieces) + closing
    fast = Reader(raw).simple_flag_list_to_end()
    general = Reader(raw)
    try:
        want: tuple[str, ...] | None = general.flag_list()
        general.end()
    except ParseError:
        want = None
    if fast is not None:
        assert fast == want
    parsed = _outcome(b"a STORE 1 +FLAGS.SILENT " + raw)
    if want is not None:
        assert parsed == c.Store("a", S("1"), "add", want, silent=True)


def _outcome(raw: bytes) -> object:
    try:
        return parse_command(raw)
    except ParseError as exc:
        return str(exc)
