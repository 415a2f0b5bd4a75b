"""The IMAP4rev1 command grammar (RFC 3501 §9) and the extensions we serve.

Entry points, all pure:

* :func:`parse_command` — one framed command (from
  :class:`clustermail.mail.imap.framing.CommandFramer`) → a typed command of
  :mod:`commands`, or :class:`ParseError`.
* :func:`parse_idle_done` — the line that ends IDLE (RFC 2177).
* :func:`parse_auth_response` — a client line during AUTHENTICATE.

The grammar is hand-written recursive descent over bytes, one function per
ABNF rule, on top of the token reader in :mod:`lexer`. It is total: any input
gives a command or a :class:`ParseError` (an unexpected internal exception is
turned into one as a last resort, and the fuzz tests check that never
happens). Nesting (SEARCH groups, NOT/OR chains) is bounded, so deep input
cannot exhaust the stack.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Callable
from typing import get_args

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import search as s
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.lexer import MAX_NUMBER64, TAG_RE, Reader, show

#: SEARCH charsets we can decode; anything else is NO [BADCHARSET (...)].
SEARCH_CHARSETS = ("US-ASCII", "UTF-8")
#: Deepest nesting of SEARCH keys (parentheses, NOT, OR) we accept.
MAX_SEARCH_DEPTH = 40

_CAPABILITY_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9=+._-]*")
_FETCH_NAME_RE = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_PART_RE = re.compile(rb"[1-9][0-9]{0,8}(?:\.[1-9][0-9]{0,8})*")
_SECTION_TEXT_RE = re.compile(rb"HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME", re.I)
_STORE_ATT_RE = re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.I)
_STORE_MODES: dict[bytes, c.StoreMode] = {b"": "replace", b"+": "add", b"-": "remove"}
_WORD_RE = re.compile(rb"[^ ]+")
_BASE64_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def parse_command(raw: bytes) -> c.AnyCommand:
    """Parse one framed command; raises only :class:`ParseError`.

    ``raw`` is a command as the framer yields it: the line without its final
    CRLF, with any literals inline (``{n}\\r\\n`` and their data). A trailing
    CRLF is not stripped: it could be the end of a literal's data.
    """
    try:
        return _parse_command(raw)
    except ParseError:
        raise
    except Exception as exc:  # last resort: the fuzz tests keep this unreachable
        raise ParseError(f"could not parse command ({type(exc).__name__})") from exc


def _parse_command(raw: bytes) -> c.AnyCommand:
    r = Reader(raw)
    tag = r.token(TAG_RE, "tag") if TAG_RE.match(raw) else None
    if tag is None:
        raise ParseError("command must start with a tag" if raw.strip() else "empty command")
    r.tag = tag.decode("ascii")
    if r.eof():
        raise r.fail("missing command name after the tag")
    r.sp("command name")
    name = r.keyword("command name")
    parse = _COMMANDS.get(name)
    if parse is None:
        if name == "UID":
            return _parse_uid(r)
        raise r.fail(f"unknown command {show(name.encode())}")
    command = parse(r)
    r.end()
    return command


def parse_idle_done(line: bytes) -> None:
    """Accept the ``DONE`` that ends IDLE; :class:`ParseError` for anything else."""
    if line.rstrip(b"\r\n").upper() != b"DONE":
        raise ParseError(f"expected DONE to end IDLE, got {show(line)!r}")


def parse_auth_response(line: bytes) -> bytes | None:
    """A client's AUTHENTICATE line: decoded base64, or ``None`` when it cancels with ``*``.

    The error has no tag: the server answers with the AUTHENTICATE command's.
    """
    line = line.rstrip(b"\r\n")
    if line == b"*":
        return None
    return _decode_base64(line)


def _decode_base64(data: bytes) -> bytes:
    if not _BASE64_RE.fullmatch(data) or len(data) % 4:
        raise ParseError("invalid base64 in authentication data")
    try:
        return b64decode(data, validate=True)
    except binascii.Error:
        raise ParseError("invalid base64 in authentication data") from None


# ------------------------------------------------------------- simple commands


def _no_args(cls: Callable[[str], c.AnyCommand]) -> Callable[[Reader], c.AnyCommand]:
    def parse(r: Reader) -> c.AnyCommand:
        return cls(_tag(r))

    return parse


def _tag(r: Reader) -> str:
    assert r.tag is not None  # set before any command parser runs
    return r.tag


def _authenticate(r: Reader) -> c.Authenticate:
    r.sp("authentication mechanism")
    mechanism = r.keyword("authentication mechanism")
    initial: bytes | None = None
    if r.next_is_sp():
        r.sp("initial response")
        token = r.token(_WORD_RE, "initial response")
        if token == b"=":
            initial = b""
        else:
            try:
                initial = _decode_base64(token)
            except ParseError as exc:
                raise exc.with_tag(_tag(r)) from None
    return c.Authenticate(_tag(r), mechanism, initial)


def _login(r: Reader) -> c.Login:
    r.sp("user name")
    user = r.astring_text("user name")
    r.sp("password")
    password = r.astring_text("password")
    return c.Login(_tag(r), user, password)


def _select(read_only: bool) -> Callable[[Reader], c.Select]:
    def parse(r: Reader) -> c.Select:
        r.sp("mailbox name")
        mailbox = r.mailbox()
        condstore = False
        if r.next_is_sp():
            r.sp("SELECT parameters")
            params: list[str] = []
            r.list_of(
                lambda: params.append(r.keyword("SELECT parameter")),
                "SELECT parameters",
                allow_empty=False,
            )
            for p in params:
                if p != "CONDSTORE":
                    raise r.fail(f"unsupported SELECT parameter {p}")
                condstore = True
        return c.Select(_tag(r), mailbox, read_only=read_only, condstore=condstore)

    return parse


_USE_ATTRS = {
    a.upper(): a
    for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}


def _create(r: Reader) -> c.Create:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    uses: list[str] = []
    if r.next_is_sp():
        r.sp("CREATE parameters")

        def param() -> None:
            name = r.keyword("CREATE parameter")
            if name != "USE":
                raise r.fail(f"unsupported CREATE parameter {name}")
            r.sp("special-use attributes")
            r.list_of(lambda: uses.append(_use_attr(r)), "USE list", allow_empty=True)

        r.list_of(param, "CREATE parameters", allow_empty=False)
    return c.Create(_tag(r), mailbox, tuple(uses))


def _use_attr(r: Reader) -> str:
    flag = r.flag("special-use attribute")
    if not flag.startswith("\\"):
        raise r.fail(f"special-use attribute {flag} must start with a backslash")
    return _USE_ATTRS.get(flag.upper(), flag)


def _one_mailbox(cls: Callable[[str, str], c.AnyCommand]) -> Callable[[Reader], c.AnyCommand]:
    def parse(r: Reader) -> c.AnyCommand:
        r.sp("mailbox name")
        return cls(_tag(r), r.mailbox())

    return parse


def _rename(r: Reader) -> c.Rename:
    r.sp("existing mailbox name")
    old = r.mailbox("existing mailbox name")
    r.sp("new mailbox name")
    new = r.mailbox("new mailbox name")
    return c.Rename(_tag(r), old, new)


# ---------------------------------------------------------------------- LIST

_LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


def _list(r: Reader) -> c.List:
    r.sp("mailbox reference")
    extended = False
    selection: set[str] = set()
    if r.peek() == 0x28:  # "(" : LIST-EXTENDED selection options
        extended = True
        r.list_of(
            lambda: selection.add(r.keyword("LIST selection option")),
            "LIST selection options",
            allow_empty=True,
        )
        unknown = selection - _LIST_SELECTION
        if unknown:
            raise r.fail(f"unsupported LIST selection option {sorted(unknown)[0]}")
        if selection == {"RECURSIVEMATCH"}:
            raise r.fail("RECURSIVEMATCH needs another selection option")
        r.sp("mailbox reference")
    reference = r.mailbox("mailbox reference")
    r.sp("mailbox pattern")
    patterns: list[str] = []
    if r.peek() == 0x28:
        extended = True
        r.list_of(
            lambda: patterns.append(r.list_mailbox("mailbox pattern")),
            "mailbox patterns",
            allow_empty=False,
        )
    else:
        patterns.append(r.list_mailbox("mailbox pattern"))
    returns: set[str] = set()
    status_items: tuple[str, ...] = ()
    if r.next_is_sp():
        r.sp("RETURN")
        if r.keyword("RETURN") != "RETURN":
            raise r.fail("expected RETURN after the mailbox pattern")
        extended = True
        r.sp("LIST return options")

        def option() -> None:
            nonlocal status_items
            name = r.keyword("LIST return option")
            if name not in _LIST_RETURN:
                raise r.fail(f"unsupported LIST return option {name}")
            if name == "STATUS":
                r.sp("STATUS items")
                status_items = _status_items(r)
            returns.add(name)

        r.list_of(option, "LIST return options", allow_empty=True)
    return c.List(
        _tag(r),
        reference,
        tuple(patterns),
        selection=frozenset(selection),
        returns=frozenset(returns),
        status_items=status_items,
        extended=extended,
    )


def _lsub(r: Reader) -> c.Lsub:
    r.sp("mailbox reference")
    reference = r.mailbox("mailbox reference")
    r.sp("mailbox pattern")
    return c.Lsub(_tag(r), reference, r.list_mailbox("mailbox pattern"))


# -------------------------------------------------------------------- STATUS


def _status_items(r: Reader) -> tuple[str, ...]:
    items: list[str] = []

    def item() -> None:
        name = r.keyword("STATUS item")
        if name not in c.STATUS_ITEMS:
            raise r.fail(f"unknown STATUS item {name}")
        items.append(name)

    r.list_of(item, "STATUS items", allow_empty=False)
    return tuple(items)


def _status(r: Reader) -> c.Status:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    r.sp("STATUS items")
    return c.Status(_tag(r), mailbox, _status_items(r))


# -------------------------------------------------------------------- APPEND


def _append(r: Reader) -> c.Append:
    r.sp("mailbox name")
    mailbox = r.mailbox()
    r.sp("message literal")
    flags: tuple[str, ...] = ()
    when = None
    if r.peek() == 0x28:
        flags = r.flag_list()
        r.sp("message literal")
    if r.peek() == 0x22:
        when = r.date_time("APPEND date-time")
        r.sp("message literal")
    if r.peek() != 0x7B and not r.at(b"~{"):
        raise r.fail(f"expected the message as a literal, found {r.here()!r}")
    message = r.literal("message")
    if not r.eof():
        raise r.fail("MULTIAPPEND is not supported: one message per APPEND")
    return c.Append(_tag(r), mailbox, flags, when, message)


# --------------------------------------------------------- ID, ENABLE, QUOTA


def _id(r: Reader) -> c.Id:
    r.sp("ID parameters")
    if r.is_nil():
        return c.Id(_tag(r), None)
    params: list[tuple[str, str | None]] = []

    def pair() -> None:
        key = r.text(r.string("ID field name"), "ID field name")
        r.sp("ID field value")
        value = r.nstring("ID field value")
        params.append((key, None if value is None else r.text(value, "ID field value")))
        if len(params) > 30:  # RFC 2971 §3.3
            raise r.fail("too many ID fields (at most 30)")

    r.list_of(pair, "ID parameters", allow_empty=True)
    return c.Id(_tag(r), tuple(params))


def _enable(r: Reader) -> c.Enable:
    caps: list[str] = []
    r.sp("capability")
    while True:
        caps.append(r.token(_CAPABILITY_RE, "capability").decode("ascii").upper())
        if not r.next_is_sp():
            break
        r.sp("capability")
    return c.Enable(_tag(r), tuple(caps))


def _getquota(r: Reader) -> c.GetQuota:
    r.sp("quota root")
    return c.GetQuota(_tag(r), r.astring_text("quota root"))


def _getquotaroot(r: Reader) -> c.GetQuotaRoot:
    r.sp("mailbox name")
    return c.GetQuotaRoot(_tag(r), r.mailbox())


def _setquota(r: Reader) -> c.SetQuota:
    r.sp("quota root")
    root = r.astring_text("quota root")
    r.sp("quota limits")
    limits: list[tuple[str, int]] = []

    def limit() -> None:
        resource = r.keyword("quota resource")
        r.sp("quota limit")
        limits.append((resource, r.number("quota limit", limit=MAX_NUMBER64)))

    r.list_of(limit, "quota limits", allow_empty=True)
    return c.SetQuota(_tag(r), root, tuple(limits))


# ------------------------------------------------------- selected-state commands


def _expunge(r: Reader) -> c.Expunge:
    return c.Expunge(_tag(r))


def _copy_or_move(cls: type[c.Copy] | type[c.Move], uid: bool) -> Callable[[Reader], c.AnyCommand]:
    def parse(r: Reader) -> c.AnyCommand:
        r.sp("sequence set")
        seq = r.sequence_set()
        r.sp("mailbox name")
        return cls(_tag(r), seq, r.mailbox(), uid=uid)

    return parse


def _store(uid: bool) -> Callable[[Reader], c.Store]:
    def parse(r: Reader) -> c.Store:
        r.sp("sequence set")
        seq = r.sequence_set()
        r.sp("store action")
        unchanged_since: int | None = None
        if r.peek() == 0x28:  # CONDSTORE store modifiers

            def modifier() -> None:
                nonlocal unchanged_since
                name = r.keyword("STORE modifier")
                if name != "UNCHANGEDSINCE":
                    raise r.fail(f"unsupported STORE modifier {name}")
                r.sp("UNCHANGEDSINCE value")
                unchanged_since = r.number("UNCHANGEDSINCE value", limit=MAX_NUMBER64)

            r.list_of(modifier, "STORE modifiers", allow_empty=False)
            r.sp("store action")
        action = r.token(_STORE_ATT_RE, "FLAGS, +FLAGS or -FLAGS")
        m = _STORE_ATT_RE.fullmatch(action)
        assert m is not None
        mode = _STORE_MODES[m.group(1)]
        silent = m.group(2) is not None
        r.sp("flags")
        if r.peek() == 0x28:
            simple = r.simple_flag_list_to_end()
            flags = r.flag_list() if simple is None else simple
        else:
            items = [r.flag()]
            while r.next_is_sp():
                r.sp("flag")
                items.append(r.flag())
            flags = tuple(items)
        return c.Store(
            _tag(r), seq, mode, flags, silent=silent, uid=uid, unchanged_since=unchanged_since
        )

    return parse


# --------------------------------------------------------------------- FETCH

_MACROS: dict[str, tuple[c.FetchItem, ...]] = {
    "FAST": (
        c.FetchAttribute("FLAGS"),
        c.FetchAttribute("INTERNALDATE"),
        c.FetchAttribute("RFC822.SIZE"),
    ),
}
_MACROS["ALL"] = (*_MACROS["FAST"], c.FetchAttribute("ENVELOPE"))
_MACROS["FULL"] = (*_MACROS["ALL"], c.FetchAttribute("BODY"))

_SIMPLE_ATTRS: dict[str, c.FetchName] = {name: name for name in get_args(c.FetchName)}
_SECTION_TEXTS: dict[str, c.SectionText] = {t: t for t in get_args(c.SectionText)}


def _fetch_att(r: Reader) -> c.FetchItem:
    name = r.token(_FETCH_NAME_RE, "FETCH item").decode("ascii").upper()
    if r.peek() == 0x5B:  # "["
        if name not in ("BODY", "BODY.PEEK"):
            if name in _SIMPLE_ATTRS:
                raise r.fail(f"FETCH item {name} takes no section")
            raise r.fail(f"unknown FETCH item {show(name.encode())}")
        section = _section(r)
        partial = None
        if r.peek() == 0x3C:  # "<"
            r.pos += 1
            origin = r.number("partial origin")
            r.expect(b".", "'.' in partial range")
            length = r.number("partial length", nonzero=True)
            r.expect(b">", "'>' closing partial range")
            partial = c.Partial(origin, length)
        return c.BodySection(section, peek=name == "BODY.PEEK", partial=partial)
    simple = _SIMPLE_ATTRS.get(name)
    if simple is None:
        if name == "BODY.PEEK":
            raise r.fail("BODY.PEEK needs a section, e.g. BODY.PEEK[]")
        if name in _MACROS:
            raise r.fail(f"macro {name} cannot be used inside a list")
        raise r.fail(f"unknown FETCH item {show(name.encode())}")
    return c.FetchAttribute(simple)


def _section(r: Reader) -> c.Section:
    r.expect(b"[", "'['")
    part: tuple[int, ...] = ()
    text = ""
    fields: list[str] = []
    raw_part = r.token(_SECTION_PART_RE, "") if 0x31 <= r.peek() <= 0x39 else None
    if raw_part is not None:
        part = tuple(int(p) for p in raw_part.split(b"."))
        if r.peek() == 0x2E:  # "."
            r.pos += 1
            text = r.token(_SECTION_TEXT_RE, "section text after part number").decode().upper()
    elif r.peek() != 0x5D:
        text = r.token(_SECTION_TEXT_RE, "section (HEADER, TEXT, part number...)").decode()
        text = text.upper()
        if text == "MIME":
            raise r.fail("MIME section needs a part number, e.g. BODY[1.MIME]")
    if text.startswith("HEADER.FIELDS"):
        r.sp("header field list")
        r.list_of(
            lambda: fields.append(r.astring_text("header field name").upper()),
            "header field list",
            allow_empty=False,
        )
    r.expect(b"]", "']' closing the section")
    return c.Section(part, _SECTION_TEXTS[text], tuple(fields))


#: FETCH item lists already parsed, by their bytes (the rest of a command after its
#: sequence set, without modifiers): clients send the same few lists again and again, and
#: parsing ``BODY.PEEK[]`` took most of a single-message FETCH's parse. The items are
#: immutable, so commands may share them. Bounded: filled up to FETCH_ITEMS_CACHED
#: lists of at most FETCH_ITEMS_KEY bytes, then emptied and filled again.
_FETCH_ITEMS: dict[bytes, tuple[c.FetchItem, ...]] = {}
FETCH_ITEMS_CACHED = 256
FETCH_ITEMS_KEY = 200


def _fetch(uid: bool) -> Callable[[Reader], c.Fetch]:
    def parse(r: Reader) -> c.Fetch:
        r.sp("sequence set")
        seq = r.sequence_set()
        r.sp("FETCH items")
        items_at = r.pos
        known = _FETCH_ITEMS.get(r.buf[items_at:])
        if known is not None:
            r.pos = len(r.buf)
            return c.Fetch(_tag(r), seq, known, uid=uid)
        items: list[c.FetchItem] = []
        if r.peek() == 0x28:
            r.list_of(lambda: items.append(_fetch_att(r)), "FETCH items", allow_empty=False)
        else:
            start = r.pos
            word = r.token(_FETCH_NAME_RE, "FETCH items").decode("ascii").upper()
            if word in _MACROS:
                items.extend(_MACROS[word])
            else:
                r.pos = start
                items.append(_fetch_att(r))
        changed_since: int | None = None
        vanished = False
        if r.next_is_sp():
            r.sp("FETCH modifiers")

            def modifier() -> None:
                nonlocal changed_since, vanished
                name = r.keyword("FETCH modifier")
                if name == "CHANGEDSINCE":
                    r.sp("CHANGEDSINCE value")
                    changed_since = r.number("CHANGEDSINCE value", limit=MAX_NUMBER64)
                elif name == "VANISHED" and uid:
                    vanished = True
                else:
                    raise r.fail(f"unsupported FETCH modifier {name}")

            r.list_of(modifier, "FETCH modifiers", allow_empty=False)
            if vanished and changed_since is None:
                raise r.fail("VANISHED needs CHANGEDSINCE")
        parsed = tuple(items)
        if changed_since is None and r.eof() and len(r.buf) - items_at <= FETCH_ITEMS_KEY:
            if len(_FETCH_ITEMS) >= FETCH_ITEMS_CACHED:
                _FETCH_ITEMS.clear()
            _FETCH_ITEMS[r.buf[items_at:]] = parsed
        return c.Fetch(
            _tag(r), seq, parsed, uid=uid, changed_since=changed_since, vanished=vanished
        )

    return parse


# -------------------------------------------------------------------- SEARCH


def _search(uid: bool) -> Callable[[Reader], c.Search]:
    def parse(r: Reader) -> c.Search:
        r.sp("search criteria")
        charset: str | None = None
        start = r.pos
        if r.peek() not in (0x28, 0x22, 0x7B) and not r.at_sequence_set():
            if r.keyword("search key") == "CHARSET":
                r.sp("charset name")
                charset = r.astring_text("charset name").upper()
                if charset not in SEARCH_CHARSETS:
                    raise ParseError(
                        f"charset {charset} is not supported",
                        tag=r.tag,
                        status="NO",
                        code="BADCHARSET (" + " ".join(SEARCH_CHARSETS) + ")",
                    )
                r.sp("search criteria")
            else:
                r.pos = start
        keys = [_search_key(r, 0)]
        while r.next_is_sp():
            r.sp("search key")
            keys.append(_search_key(r, 0))
        key = keys[0] if len(keys) == 1 else s.AndKey(tuple(keys))
        return c.Search(_tag(r), key, charset=charset, uid=uid)

    return parse


_FLAG_KEYS = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "RECENT": "\\Recent",
    "SEEN": "\\Seen",
}
_UNFLAG_KEYS = {"UN" + k: v for k, v in _FLAG_KEYS.items() if k != "RECENT"}
_HEADER_KEYS = frozenset({"BCC", "CC", "FROM", "SUBJECT", "TO"})
_DATE_KEYS: dict[str, tuple[s.DateField, s.DateOp]] = {
    "BEFORE": ("internal", "before"),
    "ON": ("internal", "on"),
    "SINCE": ("internal", "since"),
    "SENTBEFORE": ("sent", "before"),
    "SENTON": ("sent", "on"),
    "SENTSINCE": ("sent", "since"),
}


def _search_key(r: Reader, depth: int) -> s.SearchKey:
    if depth >= MAX_SEARCH_DEPTH:
        raise r.fail(f"search criteria nested deeper than {MAX_SEARCH_DEPTH} levels")
    if r.at_sequence_set():
        return s.SequenceKey(r.sequence_set())
    if r.peek() == 0x28:
        keys: list[s.SearchKey] = []
        r.list_of(
            lambda: keys.append(_search_key(r, depth + 1)), "search key group", allow_empty=False
        )
        return keys[0] if len(keys) == 1 else s.AndKey(tuple(keys))
    name = r.keyword("search key")
    if name == "ALL":
        return s.AllKey()
    if name in _FLAG_KEYS:
        return s.FlagKey(_FLAG_KEYS[name])
    if name in _UNFLAG_KEYS:
        return s.NotKey(s.FlagKey(_UNFLAG_KEYS[name]))
    if name == "NEW":
        return s.AndKey((s.FlagKey("\\Recent"), s.NotKey(s.FlagKey("\\Seen"))))
    if name == "OLD":
        return s.NotKey(s.FlagKey("\\Recent"))
    if name in ("KEYWORD", "UNKEYWORD"):
        r.sp("keyword")
        flag = s.FlagKey(r.atom("keyword").decode("ascii"))
        return flag if name == "KEYWORD" else s.NotKey(flag)
    if name in _HEADER_KEYS:
        r.sp(f"{name} string")
        return s.HeaderKey(name, r.search_text(f"{name} string"))
    if name == "HEADER":
        r.sp("header field name")
        field = r.astring_text("header field name").upper()
        r.sp("header search string")
        return s.HeaderKey(field, r.search_text("header search string"))
    if name == "BODY":
        r.sp("BODY string")
        return s.BodyKey(r.search_text("BODY string"))
    if name == "TEXT":
        r.sp("TEXT string")
        return s.TextKey(r.search_text("TEXT string"))
    if name in _DATE_KEYS:
        field, op = _DATE_KEYS[name]
        r.sp(f"{name} date")
        return s.DateKey(field, op, r.date(f"{name} date"))
    if name in ("LARGER", "SMALLER"):
        r.sp(f"{name} size")
        size = r.number(f"{name} size", limit=MAX_NUMBER64)
        return s.SizeKey("larger" if name == "LARGER" else "smaller", size)
    if name == "UID":
        r.sp("UID set")
        return s.UidKey(r.sequence_set("UID set"))
    if name == "NOT":
        r.sp("key after NOT")
        return s.NotKey(_search_key(r, depth + 1))
    if name == "OR":
        r.sp("first key after OR")
        left = _search_key(r, depth + 1)
        r.sp("second key after OR")
        return s.OrKey(left, _search_key(r, depth + 1))
    if name == "MODSEQ":
        r.sp("MODSEQ value")
        if r.peek() == 0x22:  # optional entry-name SP entry-type-req (ignored: no metadata)
            r.quoted("MODSEQ entry name")
            r.sp("MODSEQ entry type")
            kind = r.keyword("MODSEQ entry type")
            if kind not in ("PRIV", "SHARED", "ALL"):
                raise r.fail(f"invalid MODSEQ entry type {kind}")
            r.sp("MODSEQ value")
        return s.ModSeqKey(r.number("MODSEQ value", limit=MAX_NUMBER64))
    raise r.fail(f"unknown search key {show(name.encode())}")


# ----------------------------------------------------------------------- UID


def _parse_uid(r: Reader) -> c.AnyCommand:
    r.sp("command after UID")
    name = r.keyword("command after UID")
    parse = _UID_COMMANDS.get(name)
    if parse is None:
        raise r.fail(f"UID cannot be used with {show(name.encode())}")
    command = parse(r)
    r.end()
    return command


def _uid_expunge(r: Reader) -> c.Expunge:
    r.sp("UID set")
    return c.Expunge(_tag(r), r.sequence_set("UID set"))


_COMMANDS: dict[str, Callable[[Reader], c.AnyCommand]] = {
    "CAPABILITY": _no_args(c.Capability),
    "NOOP": _no_args(c.Noop),
    "LOGOUT": _no_args(c.Logout),
    "STARTTLS": _no_args(c.StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _select(read_only=False),
    "EXAMINE": _select(read_only=True),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _no_args(c.Check),
    "CLOSE": _no_args(c.Close),
    "EXPUNGE": _expunge,
    "SEARCH": _search(uid=False),
    "FETCH": _fetch(uid=False),
    "STORE": _store(uid=False),
    "COPY": _copy_or_move(c.Copy, uid=False),
    "MOVE": _copy_or_move(c.Move, uid=False),
    "ID": _id,
    "ENABLE": _enable,
    "IDLE": _no_args(c.Idle),
    "NAMESPACE": _no_args(c.Namespace),
    "UNSELECT": _no_args(c.Unselect),
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _getquotaroot,
    "SETQUOTA": _setquota,
}

_UID_COMMANDS: dict[str, Callable[[Reader], c.AnyCommand]] = {
    "FETCH": _fetch(uid=True),
    "STORE": _store(uid=True),
    "COPY": _copy_or_move(c.Copy, uid=True),
    "MOVE": _copy_or_move(c.Move, uid=True),
    "SEARCH": _search(uid=True),
    "EXPUNGE": _uid_expunge,
}

#: Every command word the parser knows (for CAPABILITY-independent checks and docs).
COMMAND_NAMES = frozenset(_COMMANDS) | {"UID"}
