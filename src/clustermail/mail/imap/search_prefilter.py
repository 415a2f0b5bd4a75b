"""A bytes prefilter for SEARCH: which messages a key cannot match, seen from raw bytes.

The evaluator (:mod:`clustermail.mail.imap.search` over
:class:`clustermail.mail.imap.fetch.SearchMessage`) decodes every message it looks at:
header fields unfolded with encoded words decoded, bodies parsed by the email package
with their transfer encodings and charsets undone. That costs tens to hundreds of
microseconds a message, while most messages of a search do not match. This module
rules those out with one lower-casing pass and a substring test over the raw bytes,
and only where that is exact: the message is 7-bit ASCII, its header has no encoded
word, no body part is base64, quoted-printable or uuencoded, and every charset it names
decodes ASCII as itself. Then case-folding is ASCII lower-casing, a header field's
value is a piece of the header block with its line breaks taken out (unfolding), and a
line of body text is a piece of the message: a needle without line breaks that is in
neither (lowered) cannot match. Messages that are not so plain, and needles with line
breaks, are left to the evaluator ("maybe"). What the prefilter passes is evaluated
exactly as before, so results never change. Substring tests only: nothing is compiled
from what the client sent.

HEADER keys also keep each message's header block in :data:`HEADERS`, shared by all
sessions, so that searching a folder again reads nothing from the store.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from clustermail.mail.imap import search as s
from clustermail.mail.store import MailboxDatabase

_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_BREAKS = b"\r\n"
# Charsets that decode 7-bit bytes as the same characters. Python falls back to UTF-8
# for names it does not know, also ASCII-transparent; the danger is names it knows
# (UTF-7, UTF-16, ISO-2022-*, EBCDIC...), so anything not listed here is "maybe".
_PLAIN_CHARSETS = frozenset(
    [b"us-ascii", b"ascii", b"utf-8", b"utf8", b"latin1", b"latin-1"]
    + [b"iso-8859-%d" % n for n in range(1, 17)]
    + [b"windows-%d" % n for n in range(1250, 1259)]
)
_PLAIN_ENCODINGS = frozenset([b"7bit", b"8bit", b"binary"])
# After "charset" (a parameter) or "transfer-encoding" (a field): blanks, "=" or ":",
# blanks, maybe a quote, then a token that must end at a delimiter (a longer name would
# be another codec).
_BLANKS = rb"[ \t\r\n]*"
_TOKEN = rb'"?([a-z0-9._:+-]+)(?=[";, \t\r\n]|$)'
_PLAIN_PARAMS = (
    (b"charset", re.compile(_BLANKS + b"=" + _BLANKS + _TOKEN), _PLAIN_CHARSETS),
    (b"transfer-encoding", re.compile(_BLANKS + b":" + _BLANKS + _TOKEN), _PLAIN_ENCODINGS),
)

Scope = Literal["header", "body", "text"]


@dataclass(frozen=True, slots=True)
class Need:
    """The key can only match if ``needle`` (case-folded, ASCII, no line break) occurs in
    the message's ``scope``; ``needle`` None: it cannot match a plain (all-ASCII)
    message at all (a needle that case-folds to non-ASCII text)."""

    scope: Scope
    needle: bytes | None


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Prefilter, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Prefilter, ...]


Prefilter = Need | AllOf | AnyOf


def build(key: s.SearchKey) -> Prefilter | None:
    """A prefilter for ``key``, or None when bytes can rule nothing out (no string key
    or header that every match needs)."""
    match key:
        case s.HeaderKey(value=value):
            return _need("header", value)
        case s.DateKey(field="sent"):
            # Rules nothing out, but the evaluator then gets the header block (from
            # HEADERS) instead of reading the message.
            return EVERY_HEADER
        case s.BodyKey(text=text):
            return _need("body", text)
        case s.TextKey(text=text):
            # TEXT looks in "NAME: value" lines: a needle with a colon or a leading blank
            # could span a field name and its value, which the raw bytes need not show.
            if ":" in text or text[:1] in (" ", "\t"):
                return None
            return _need("text", text)
        case s.AndKey(keys=keys):
            parts = tuple(p for p in map(build, keys) if p is not None)
            if not parts:
                return None
            return parts[0] if len(parts) == 1 else AllOf(parts)
        case s.OrKey(left=left, right=right):
            a, b = build(left), build(right)
            return None if a is None or b is None else AnyOf((a, b))
    return None  # NOT, flags, dates, sizes, numbers: no byte is needed to match them


#: Every message, with its header block: the prefilter of keys that only read headers
#: without a string to look for (``HEADER name ""``, SENTBEFORE/SENTON/SENTSINCE).
EVERY_HEADER = Need("header", b"")


def _need(scope: Scope, text: str) -> Need | None:
    folded = text.casefold()
    if not folded.isascii():
        return Need(scope, None)
    if "\r" in folded or "\n" in folded:
        return None
    return Need(scope, folded.encode("ascii"))


def header_only(pre: Prefilter) -> bool:
    """Whether only header bytes are looked at (then a prefix of a large message will do)."""
    if isinstance(pre, Need):
        return pre.scope == "header"
    return all(header_only(p) for p in pre.parts)


class Haystack:
    """One message's raw bytes and their lowered forms, each computed once."""

    __slots__ = ("_full", "_head", "complete", "raw")

    def __init__(self, raw: bytes, complete: bool = True) -> None:
        self.raw = raw
        self.complete = complete  # False: raw is a prefix of a larger message
        self._head: bytes | Literal[False] | None = False
        self._full: bytes | Literal[False] | None = False

    @classmethod
    def of_head(cls, head: bytes | None) -> Haystack:
        """A message known by its header only (from :class:`HeaderCache`)."""
        hay = cls(b"", complete=False)
        hay._head = head
        return hay

    def head(self) -> bytes | None:
        """The lowered header block (to the first blank line), None if it is not plain."""
        if self._head is False:
            self._head = plain_head(header_block(self.raw, self.complete))
        return self._head

    def full(self) -> bytes | None:
        """The whole message lowered, None unless its body parts are plain (the header
        may hold encoded words: BODY does not decode them). Line breaks stay: a needle
        without one that a body part holds lies within one line of it."""
        if self._full is False:
            self._full = None
            if self.complete and self.raw.isascii():
                lowered = self.raw.lower()  # bytes: ASCII letters only
                if _plain_parts(lowered):
                    self._full = lowered
        return self._full


def header_block(raw: bytes, complete: bool = True) -> bytes | None:
    """The header block of ``raw``: up to its first blank line (without it), or all of it
    when it has none; None when ``raw`` is a prefix that does not reach the blank line.
    The header fields parsed from it are those parsed from the whole message."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw if complete else None
    return raw[: end + 2]


def plain_head(block: bytes | None) -> bytes | None:
    """A header block lowered with line breaks removed; None when it is not plain."""
    if block is None or not block.isascii() or (b"?" in block and b"=?" in block):
        return None
    return block.translate(_LOWER, _BREAKS)


def _plain_parts(data: bytes) -> bool:
    """Whether every "charset" and "transfer-encoding" in ``data`` (lowered, line breaks
    kept) names a plain one: the email package then decodes no part (a value it does not
    know means no decoding, but this test wants one it knows to be plain)."""
    for word, pattern, plain in _PLAIN_PARAMS:
        at = data.find(word)
        while at >= 0:
            m = pattern.match(data, at + len(word))
            if m is None or m[1] not in plain:
                return False
            at = data.find(word, m.end())
    return True


def maybe(pre: Prefilter, hay: Haystack) -> bool:
    """False only when the message certainly does not match the key ``pre`` came from."""
    if isinstance(pre, Need):
        if pre.scope == "header":
            data = hay.head()
        elif pre.scope == "body":
            data = hay.full()
        else:  # TEXT: the header's fields (unfolded) or the body's lines
            head, data = hay.head(), hay.full()
            if head is None or data is None:
                return True
            if pre.needle is not None and pre.needle in head:
                return True
        if data is None:
            return True  # not plain: the evaluator decides
        return pre.needle is not None and pre.needle in data
    if isinstance(pre, AllOf):
        return all(maybe(p, hay) for p in pre.parts)
    return any(maybe(p, hay) for p in pre.parts)


#: Whole messages up to this size are read for BODY and TEXT; larger ones go to the
#: evaluator, which parses them anyway. HEADER reads at most this much of each message.
WHOLE_LIMIT = 1 << 20
HEADER_LIMIT = 64 * 1024
#: How long a search waits for another one reading the same folder's heads (seconds).
FILL_WAIT = 5.0
#: UIDs per read snapshot, so that a search of a huge folder does not pin one.
CHUNK = 4096
#: A wider gap between UIDs to read starts a new range scan.
GAP = 64


#: What :class:`HeaderCache` keeps of a message: its header block lowered with line breaks
#: removed (None: not plain) for the prefilter, and the block itself (None: not read
#: whole) for the evaluator, so that it need not read the message again.
Head = tuple[bytes | None, bytes | None]


class HeaderCache:
    """The header blocks of the messages of recently searched folders, shared by all
    sessions as Dovecot's cache file is: a HEADER search of a folder already seen is
    then a substring test per message, and an exact test from memory for those that
    pass it. Keyed by database file, mailbox and UIDVALIDITY, which with the UID never
    name two different messages; whole folders are dropped, least recently searched
    first, past ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._folders: OrderedDict[tuple[str, str, int], dict[int, Head]] = OrderedDict()
        self._sizes: dict[tuple[str, str, int], int] = {}
        self._total = 0
        self._lock = threading.Lock()
        self._filling: dict[tuple[str, str, int], threading.Event] = {}

    def fill_turn(self, key: tuple[str, str, int]) -> threading.Event | None:
        """An event to set once done when the caller is to read the folder's missing heads;
        None after waiting (bounded) for another search that was reading them: two sessions
        searching a new folder at once then read it once."""
        with self._lock:
            busy = self._filling.get(key)
            if busy is None:
                done = self._filling[key] = threading.Event()
                return done
        busy.wait(FILL_WAIT)
        return None

    def filled(self, key: tuple[str, str, int], done: threading.Event) -> None:
        with self._lock:
            if self._filling.get(key) is done:
                del self._filling[key]
        done.set()

    def folder(self, key: tuple[str, str, int]) -> dict[int, Head]:
        """The folder's entries (a live dict: read it without the lock, fill it with add)."""
        with self._lock:
            entries = self._folders.get(key)
            if entries is None:
                entries = self._folders[key] = {}
                self._sizes[key] = 0
            self._folders.move_to_end(key)
            return entries

    def add(self, key: tuple[str, str, int], heads: dict[int, Head]) -> None:
        """Caches the heads of some of the folder's messages."""
        cost = sum(map(_cost, heads.values()))
        with self._lock:
            entries = self._folders.get(key)
            if entries is None or cost > self.budget:
                return
            while self._total + cost > self.budget and self._folders:
                # Not cleared: a search running on it keeps what it read (entries only grow).
                old, _ = self._folders.popitem(last=False)
                self._total -= self._sizes.pop(old)
                if old == key:
                    return
            entries.update(heads)
            self._sizes[key] += cost
            self._total += cost


def _cost(head: Head) -> int:
    return 80 + len(head[0] or b"") + len(head[1] or b"")


#: 32 MiB: some 50,000 headers of a few hundred bytes (every Received: line counts).
HEADERS = HeaderCache(32 << 20)


def candidates(
    db: MailboxDatabase,
    mailbox: str,
    folder: str,
    uids: Sequence[int],
    pre: Prefilter,
    uidvalidity: int = 0,
) -> dict[int, bytes | None]:
    """The UIDs among ``uids`` (ascending) that ``pre`` cannot rule out, from range scans of
    their raw bytes (for HEADER keys, from :data:`HEADERS` where it has them), each with
    its header block when that is at hand (else None). A UID the store no longer holds
    may or may not be among them."""
    heads = header_only(pre)
    limit = HEADER_LIMIT if heads else WHOLE_LIMIT
    if not heads:
        found: dict[int, bytes | None] = {}
        wanted = set(uids)

        def visit(uid: int, raw: bytes | None) -> None:
            if uid in wanted and (raw is None or maybe(pre, Haystack(raw, len(raw) < limit))):
                found[uid] = None

        if isinstance(pre, Need) and pre.scope == "body" and pre.needle is not None:
            body_needle = pre.needle

            def visit(uid: int, raw: bytes | None) -> None:  # BODY x: maybe() inlined
                if uid not in wanted:
                    return
                if raw is None or len(raw) >= limit or not raw.isascii():
                    found[uid] = None
                    return
                lowered = raw.lower()
                if body_needle in lowered or not _plain_parts(lowered):
                    found[uid] = None

        _scan(db, mailbox, folder, uids, visit, limit, prefix=False)
        return found
    # HEADER keys: from the cached heads, after reading those of the messages not cached.
    key = (str(db.path), mailbox, uidvalidity)
    cached = HEADERS.folder(key) if uidvalidity else {}
    missing = sorted(set(uids).difference(cached))  # set operations: no Python loop
    done = HEADERS.fill_turn(key) if missing and uidvalidity else None
    if missing and done is None and uidvalidity:
        missing = sorted(set(missing).difference(cached))  # read by the other search
    read: dict[int, Head] = {}
    passed: dict[int, bytes | None] = {}  # decided as read, once ``read`` is full
    wanted = set(missing)
    room = HEADERS.budget  # what one search may hold: a folder of huge headers is big

    def keep(uid: int, raw: bytes | None) -> None:
        nonlocal room
        if uid in wanted:
            block = None if raw is None else header_block(raw, len(raw) < limit)
            head = plain_head(block)
            cost = _cost((head, block))
            if cost <= room:
                room -= cost
                read[uid] = (head, block)
            elif maybe(pre, Haystack.of_head(head)):
                passed[uid] = None  # the evaluator reads it again

    try:
        if missing:
            _scan(db, mailbox, folder, missing, keep, limit, prefix=True)
            if uidvalidity:
                HEADERS.add(key, read)
    finally:
        if done is not None:
            HEADERS.filled(key, done)
    needle = pre.needle if isinstance(pre, Need) else None
    if needle is not None and not read and not passed:
        # A folder searched before, one string: the common case, in one comprehension
        # (a head that is not plain, None, leaves the message to the evaluator).
        hits = [
            uid for uid in uids
            if (entry := cached.get(uid)) is not None
            and (entry[0] is None or needle in entry[0])
        ]
        return {uid: cached[uid][1] for uid in hits}
    out: dict[int, bytes | None] = {}
    for uid in uids:
        try:
            head, block = cached[uid]
        except KeyError:
            if uid not in read:
                if uid in passed:
                    out[uid] = None
                continue  # else not in the store any more
            head, block = read[uid]
        if needle is not None and head is not None:
            if needle in head:  # the common case, without the general walk
                out[uid] = block
        elif maybe(pre, Haystack.of_head(head)):
            out[uid] = block
    return out


def _scan(
    db: MailboxDatabase,
    mailbox: str,
    folder: str,
    uids: Sequence[int],
    visit: Callable[[int, bytes | None], None],
    limit: int,
    *,
    prefix: bool,
) -> None:
    for first, last in _runs(uids):
        db.scan_raw(mailbox, folder, first, last, visit, limit=limit, prefix=prefix)


def _runs(uids: Sequence[int]) -> Iterator[tuple[int, int]]:
    """UID ranges covering ``uids`` (ascending): at most CHUNK of them per range, and a
    new range across a gap wider than GAP (the rows in it would be read for nothing)."""
    if not uids:
        return
    first = prev = uids[0]
    count = 1
    for uid in uids[1:]:
        if uid - prev > GAP or count >= CHUNK:
            yield first, prev
            first, count = uid, 0
        prev = uid
        count += 1
    yield first, prev
