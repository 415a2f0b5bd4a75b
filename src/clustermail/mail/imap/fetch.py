"""FETCH items of one message, assembled from the store and its cached MIME structure.

ENVELOPE, BODYSTRUCTURE and the byte offsets of every part were computed once
at delivery (:mod:`clustermail.mail.store.mime`); a section fetch reads just the bytes
it names with :meth:`MailboxDatabase.fetch_range`. Strings in the cached
structure are raw header bytes decoded with ``surrogateescape``; the renderer
encodes them back the same way, so 8-bit headers go out as they came in.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.utils
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from email.policy import compat32

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import envelope_json
from clustermail.mail.imap import response as r
from clustermail.mail.imap import search as s
from clustermail.mail.imap.mailbox_view import MailboxView
from clustermail.mail.store import MailboxDatabase, mime
from clustermail.mail.store import flags as store_flags

Nested = r.Nested


def sets_seen(items: Sequence[c.FetchItem]) -> bool:
    """Whether the items mark a message \\Seen (BODY[...] without PEEK, RFC822, RFC822.TEXT)."""
    return any(
        (isinstance(i, c.BodySection) and not i.peek)
        or (isinstance(i, c.FetchAttribute) and i.name in ("RFC822", "RFC822.TEXT"))
        for i in items
    )


def internal_date(timestamp: int) -> bytes:
    return r.date_time(datetime.fromtimestamp(timestamp, UTC))


class _Lru:
    """A small LRU map; messages never change, so entries never go stale. Locked: FETCH
    and SEARCH also read messages in worker threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple[str, str, int, int, str], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int, int, str]) -> object | None:
        with self._lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key: tuple[str, str, int, int, str], value: object) -> None:
        with self._lock:
            self.data[key] = value
            if len(self.data) > self.size:
                self.data.popitem(last=False)

    def absent(self, keys: Iterable[tuple[str, str, int, int, str]]) -> list[int]:
        """The UIDs of the ``keys`` not cached (one lock for a whole FETCH chunk)."""
        with self._lock:
            return [key[3] for key in keys if key not in self.data]

    def put_many(self, items: Iterable[tuple[tuple[str, str, int, int, str], object]]) -> None:
        with self._lock:
            self.data.update(items)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


#: Parsed structures and rendered ENVELOPE/BODYSTRUCTURE of recently fetched messages,
#: shared by all sessions (like Dovecot's cache file): keyed by database file, mailbox,
#: UIDVALIDITY and UID, which together never name two different messages.
_CACHE = _Lru(50_000)


#: FETCH of many messages loads their structures this many at a time, in one scan.
PREFETCH = 256
_STRUCTURE_ITEMS = frozenset(
    {"ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.HEADER", "RFC822.TEXT"}
)


def needs_structure(items: Sequence[c.FetchItem]) -> bool:
    return any(
        isinstance(i, c.BodySection)
        or (isinstance(i, c.FetchAttribute) and i.name in _STRUCTURE_ITEMS)
        for i in items
    )


def prefetch_structures(
    db: MailboxDatabase, mailbox: str, folder: str, uidvalidity: int, uids: Sequence[int]
) -> None:
    """Puts the structures of ``uids`` that are not cached yet into the shared cache with
    one range scan instead of a lookup each (a new client's FETCH 1:* ENVELOPE)."""
    if not uidvalidity:
        return
    key = (str(db.path), mailbox, uidvalidity)
    missing = {u for u in uids if _CACHE.get((*key, u, "")) is None}
    if len(missing) < 2:
        return
    first, last = min(missing), max(missing)
    if last - first + 1 > 4 * len(missing):
        return  # sparse: the range would read mostly messages nobody asked for
    for uid, structure in db.fetch_structures(mailbox, folder, first, last).items():
        if uid in missing:
            _CACHE.put((*key, uid, ""), structure)


def prefetch_envelopes(
    db: MailboxDatabase, mailbox: str, folder: str, uidvalidity: int, uids: Sequence[int]
) -> None:
    """Puts the rendered ENVELOPEs of ``uids`` that are not cached yet into the shared
    cache from one range scan, reading only the envelope out of each stored structure
    (:mod:`envelope_json`): a new client's FETCH 1:* (FLAGS ENVELOPE). A message whose
    structure does not read that way is left to :meth:`MessageFetcher.rendered`."""
    if not uidvalidity or not uids:
        return
    path = str(db.path)
    missing = _CACHE.absent((path, mailbox, uidvalidity, u, "ENVELOPE") for u in uids)
    if not missing:
        return
    first, last = min(missing), max(missing)
    if last - first + 1 > 4 * len(missing):
        return  # sparse: the range would read mostly messages nobody asked for
    wanted = set(missing)
    done: list[tuple[tuple[str, str, int, int, str], object]] = []
    for uid, structure in db.fetch_structure_texts(mailbox, folder, first, last):
        if uid not in wanted:
            continue
        data = _envelope_from_text(structure)
        if data is not None:
            done.append(((path, mailbox, uidvalidity, uid, "ENVELOPE"), data))
    _CACHE.put_many(done)


def _envelope_from_text(structure: str) -> bytes | None:
    text = envelope_json.envelope_text(structure)
    if text is None:
        return None
    data = envelope_json.render(text)
    if data is not None:
        return data
    try:  # escapes or 8-bit text: parse the envelope alone, render it the usual way
        envelope = json.loads(text)
        if not isinstance(envelope, list):
            return None
        return r.render_envelope(envelope)
    except (ValueError, TypeError, RecursionError):
        return None  # not an envelope: the full parse and render fail as they always did


def prefetcher(
    items: Sequence[c.FetchItem],
) -> Callable[[MailboxDatabase, str, str, int, Sequence[int]], None] | None:
    """How a FETCH of many messages loads what ``items`` need ahead, a chunk at a time:
    rendered ENVELOPEs alone when that is all it needs of the structure, else whole
    structures; None when it needs nothing of the message."""
    if not needs_structure(items):
        return None
    if all(
        isinstance(i, c.FetchAttribute) and (i.name == "ENVELOPE" or i.name not in _STRUCTURE_ITEMS)
        for i in items
    ):
        return prefetch_envelopes
    return prefetch_structures


class MessageFetcher:
    """Reads one message's data for FETCH, loading the structure at most once."""

    def __init__(
        self, db: MailboxDatabase, mailbox: str, folder: str, uid: int, uidvalidity: int = 0
    ) -> None:
        self.db = db
        self.mailbox = mailbox
        self.folder = folder
        self.uid = uid
        self._key = (str(db.path), mailbox, uidvalidity, uid) if uidvalidity else None
        self._structure: mime.MessageStructure | None = None
        self._raw: bytes | None = None

    @property
    def structure(self) -> mime.MessageStructure:
        if self._structure is None:
            cached = _CACHE.get((*self._key, "")) if self._key else None
            if isinstance(cached, mime.MessageStructure):
                self._structure = cached
            else:
                self._structure = self.db.fetch_structure(self.mailbox, self.folder, self.uid)
                if self._key:
                    _CACHE.put((*self._key, ""), self._structure)
        return self._structure

    def rendered(self, item: str) -> bytes:
        """ENVELOPE, BODYSTRUCTURE or BODY in wire form."""
        key = (*self._key, item) if self._key else None
        cached = _CACHE.get(key) if key else None
        if isinstance(cached, bytes):
            return cached
        if item == "ENVELOPE":
            data = r.render_envelope(self.structure.envelope)
        else:
            data = r.render_bodystructure(self.structure.body, extensible=item == "BODYSTRUCTURE")
        if key:
            _CACHE.put(key, data)
        return data

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.db.fetch_raw(self.mailbox, self.folder, self.uid)
        return self._raw

    def read(self, start: int, end: int) -> bytes:
        if self._raw is not None:
            return self._raw[start:end]
        if start == 0 and end >= self.structure.size:
            return self.raw()
        return self.db.fetch_range(self.mailbox, self.folder, self.uid, start, end)

    # ------------------------------------------------------------------ sections

    def section(self, section: c.Section, partial: c.Partial | None) -> bytes | None:
        """The bytes of a body section (``None`` when the message has no such part)."""
        if not section.part and not section.text:
            # BODY[]: the whole message is the stored bytes; no structure to read.
            return _clip(self.raw(), partial)
        num = ".".join(str(p) for p in section.part)
        s = self.structure
        if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            node = s.messages.get(num)
            if node is None:
                return None
            data = filter_header(
                self.read(node[0], node[1]), section.fields, section.text == "HEADER.FIELDS"
            )
            return _clip(data, partial)
        spec = ".".join(p for p in (num, section.text) if p)
        span = s.section(spec)
        if span is None:
            return None
        start, end = span
        if partial is not None:
            start, end = (
                min(start + partial.origin, end),
                min(start + partial.origin + partial.length, end),
            )
        return self.read(start, end) if end > start else b""


def whole_message(item: c.BodySection) -> bool:
    """``BODY[]`` or ``BODY.PEEK[]``: all of the message, no part, no range."""
    return item.partial is None and not item.section.part and not item.section.text


def _section_name(item: c.BodySection) -> bytes:
    """The item's name in the response (``BODY[]`` for the whole message, the common one)."""
    if whole_message(item):
        return b"BODY[]"
    return item.response_name().encode("ascii")


def _clip(data: bytes, partial: c.Partial | None) -> bytes:
    if partial is None:
        return data
    return data[partial.origin : partial.origin + partial.length]


def filter_header(header: bytes, fields: Sequence[str], keep: bool) -> bytes:
    """HEADER.FIELDS (``keep``) or HEADER.FIELDS.NOT: whole fields with their continuation
    lines, in message order, then the blank line that ends a header."""
    wanted = {name.upper().encode("ascii", "replace") for name in fields}
    out: list[bytes] = []
    taking = False
    ended = False  # a message that is all header has no blank line to return
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            ended = True
            break
        if line[:1] in (b" ", b"\t"):
            if taking:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].rstrip(b" \t").upper()
        taking = (name in wanted) == keep
        if taking:
            out.append(line if line.endswith(b"\n") else line + b"\r\n")
    if ended or keep:  # Dovecot's rule: HEADER.FIELDS always ends with the blank line
        out.append(b"\r\n")
    return b"".join(out)


def fetch_parts(
    fetcher: MessageFetcher,
    view: MailboxView,
    seq: int,
    items: Sequence[c.FetchItem],
    *,
    with_uid: bool,
) -> list[bytes]:
    """The rendered ``NAME value`` parts of one FETCH response, in the order asked (UID
    first when the command was UID FETCH and the client did not ask for it); join them
    with :func:`response.fetch_line`. Bytes straight away, not values to render: a
    FETCH 1:* of a big mailbox makes tens of thousands of these."""
    out: list[bytes] = []
    i = seq - 1
    if with_uid and not any(isinstance(x, c.FetchAttribute) and x.name == "UID" for x in items):
        out.append(b"UID %d" % view.uids[i])
    for item in items:
        if isinstance(item, c.BodySection):
            # A part the message does not have is empty, as Dovecot answers (not NIL).
            body = fetcher.section(item.section, item.partial) or b""
            # One copy of the message here (a literal, then the name before it, took two).
            out.append(b"%s {%d}\r\n%s" % (_section_name(item), len(body), body))
            continue
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % view.uids[i])
        elif name == "FLAGS":
            out.append(b"FLAGS " + view.flag_bytes(seq))
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + internal_date(view.dates[i]))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % view.sizes[i])
        elif name in ("ENVELOPE", "BODYSTRUCTURE", "BODY"):
            out.append(name.encode("ascii") + b" " + fetcher.rendered(name))
        elif name == "RFC822":
            out.append(b"RFC822 " + r.literal(fetcher.raw()))
        elif name == "RFC822.HEADER":
            data = fetcher.section(c.Section(text="HEADER"), None)
            out.append(b"RFC822.HEADER " + r.literal(data or b""))
        elif name == "RFC822.TEXT":
            data = fetcher.section(c.Section(text="TEXT"), None)
            out.append(b"RFC822.TEXT " + r.literal(data or b""))
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % view.modseq)
    return out


# --------------------------------------------------------------------------- SEARCH


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SearchMessage:
    """A :class:`clustermail.mail.imap.search.MessageView` over the session's view and the
    store: flags, sizes and dates come from the listing; headers and text are read (and
    decoded) only when a key needs them."""

    def __init__(
        self,
        view: MailboxView,
        seq: int,
        fetcher: MessageFetcher,
        header_block: bytes | None = None,
    ) -> None:
        self.view = view
        self.seq = seq
        self.uid = view.uids[seq - 1]
        self._fetcher = fetcher
        self._message: email.message.Message | None = None
        self._headers: list[tuple[str, str]] | None = None
        self._undecoded: list[tuple[str, str]] | None = None
        # The message's header block when the caller has it (the search prefilter's cache):
        # it parses to the same fields as the range the structure names.
        self._block = header_block

    @property
    def flags(self) -> set[str]:
        return set(self.view.flag_list(self.seq))

    @property
    def internal_date(self) -> datetime:
        return datetime.fromtimestamp(self.view.dates[self.seq - 1], UTC)

    @property
    def size(self) -> int:
        return self.view.sizes[self.seq - 1]

    @property
    def sent_date(self) -> datetime | None:
        # Without a usable Date: the message counts as sent at the epoch (as Dovecot does),
        # so SENTBEFORE finds it and SENTSINCE does not.
        values = self.header("DATE")
        try:
            return email.utils.parsedate_to_datetime(values[0]) if values else _EPOCH
        except (TypeError, ValueError, IndexError):
            return _EPOCH

    def _raw_fields(self) -> list[tuple[str, str]]:
        if self._undecoded is None:
            if self._block is not None:
                fields, _ = mime.parse_header(self._block, 0, len(self._block))
            else:
                s = self._fetcher.structure
                start, end, _ = s.messages[""]
                fields, _ = mime.parse_header(self._fetcher.read(start, end), 0, end - start)
            self._undecoded = [(name.upper(), v) for name, v in fields]
        return self._undecoded

    def _header_fields(self) -> list[tuple[str, str]]:
        if self._headers is None:
            self._headers = [(n, decode_header_value(v)) for n, v in self._raw_fields()]
        return self._headers

    def header(self, name: str) -> list[str]:
        wanted = name.upper()
        if self._headers is not None:
            return [v for n, v in self._headers if n == wanted]
        # Decode only the fields asked for: HEADER keys name one.
        return [decode_header_value(v) for n, v in self._raw_fields() if n == wanted]

    def _parsed(self) -> email.message.Message:
        if self._message is None:
            self._message = email.message_from_bytes(self._fetcher.raw(), policy=compat32)
        return self._message

    def body_text(self) -> str:
        parts: list[str] = []
        for part in self._parsed().walk():
            if part.is_multipart() or part.get_content_maintype() not in ("text", "message"):
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "us-ascii"
            try:
                parts.append(payload.decode(charset, "replace"))
            except LookupError:
                parts.append(payload.decode("utf-8", "replace"))
        return "\n".join(parts)

    def full_text(self) -> str:
        head = "\n".join(f"{n}: {v}" for n, v in self._header_fields())
        return head + "\n" + self.body_text()


def decode_header_value(value: str) -> str:
    """A header value with RFC 2047 encoded words decoded (8-bit text taken as UTF-8)."""
    raw = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" not in raw:
        return raw
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (LookupError, ValueError, UnicodeError, email.errors.HeaderParseError):
        return raw


# --------------------------------------------------------------------------- fast SEARCH

_SYSTEM_BITS = {
    "\\seen": store_flags.SEEN,
    "\\answered": store_flags.ANSWERED,
    "\\flagged": store_flags.FLAGGED,
    "\\deleted": store_flags.DELETED,
    "\\draft": store_flags.DRAFT,
}


def flag_search(
    key: s.SearchKey, view: MailboxView, ctx: s.SearchContext
) -> Sequence[int] | None:
    """Evaluate a key over the whole view at once when it needs only flags, numbers and
    UIDs (the common client searches: UNSEEN, DELETED, UID ranges); None otherwise."""
    n = len(view.uids)
    match key:
        case s.AllKey():
            return [True] * n
        case s.FlagKey(flag=flag):
            bit = _SYSTEM_BITS.get(flag.lower())
            if bit is not None:
                return view.with_flag(bit)
            if flag.lower() == "\\recent":
                return [u in view.recent for u in view.uids]
            kw = flag.casefold()
            return [
                any(k.casefold() == kw for k in view.keywords.get(u, "").split()) for u in view.uids
            ]
        case s.SequenceKey(sequence_set=seqs):
            wanted = set(seqs.iter_numbers(n))
            return [i in wanted for i in range(1, n + 1)]
        case s.UidKey(sequence_set=uids):
            spans = uids.intervals(ctx.max_uid)
            return [any(a <= u <= b for a, b in spans) for u in view.uids]
        case s.NotKey(key=s.FlagKey(flag=flag)) if flag.lower() in _SYSTEM_BITS:
            # UNSEEN, UNDELETED...: the searches clients send most
            return view.with_flag(_SYSTEM_BITS[flag.lower()], present=False)
        case s.NotKey(key=inner):
            hits = flag_search(inner, view, ctx)
            return None if hits is None else [not h for h in hits]
        case s.OrKey(left=left, right=right):
            a, b = flag_search(left, view, ctx), flag_search(right, view, ctx)
            return None if a is None or b is None else [x or y for x, y in zip(a, b, strict=True)]
        case s.AndKey(keys=keys):
            out: Sequence[int] = [1] * n
            for k in keys:
                hits = flag_search(k, view, ctx)
                if hits is None:
                    return None
                out = [x and y for x, y in zip(out, hits, strict=True)]
            return out
    return None
