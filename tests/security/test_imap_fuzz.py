"""Bounded fuzzing of what an IMAP client's bytes reach: the framer (before and after
login, in any chunking, with literals refused at random), the command parser and lexer,
and the MIME analyser every stored message goes through.

Each input must be handled without an exception other than the protocol's own
:class:`ParseError`, within a time bound (no hang), with the framer never holding more
than its limits allow. ``CLUSTERMAIL_FUZZ_SCALE=N`` runs N times as many inputs (the
long run recorded in docs/security.md); the inputs tried are counted and printed.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response
from clustermail.mail.imap.errors import ParseError
from clustermail.mail.imap.framing import (
    CommandFrame,
    CommandFramer,
    ContinuationNeeded,
    FramingError,
    FramingLimits,
)
from clustermail.mail.imap.parser import parse_command
from clustermail.mail.store import mime
from tests.mail.imap.test_properties import FRAGMENTS

SCALE = int(os.environ.get("CLUSTERMAIL_FUZZ_SCALE", "1"))
#: Inputs per target in one ordinary run (documented in docs/security.md).
EXAMPLES = {"framer": 1000, "parser": 1000, "mime": 400}
#: Wall-clock seconds one input may take before it counts as a hang.
HANG = 5.0

TRIED: Counter[str] = Counter()


def fuzz(target: str) -> settings:
    return settings(
        max_examples=EXAMPLES[target] * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print(f"\nIMAP fuzzing: inputs tried {dict(TRIED)}, total {sum(TRIED.values())}")


imapish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join)
stream = st.lists(
    st.one_of(imapish, st.binary(max_size=200), st.sampled_from([b"\r\n", b"a NOOP\r\n"])),
    max_size=8,
).map(b"".join)
SMALL = FramingLimits(
    max_line=64, max_literal=300, max_argument_literal=40, max_command=200, max_login_command=120
)


def _bounded(fn: object) -> None:
    assert callable(fn)
    start = time.monotonic()
    fn()
    assert time.monotonic() - start < HANG, "took too long: a hang"


def _check_frame(raw: bytes) -> None:
    try:
        command = parse_command(raw)
    except ParseError as err:
        assert err.status in ("BAD", "NO") and err.message
        response.render_parse_error(err)
    else:
        assert isinstance(command, c.Command)


@fuzz("framer")
@given(
    data=stream,
    cuts=st.lists(st.integers(0, 2000), max_size=10),
    authenticated=st.booleans(),
    refusals=st.lists(st.booleans(), max_size=10),
    small=st.booleans(),
)
def test_framer(
    data: bytes, cuts: list[int], authenticated: bool, refusals: list[bool], small: bool
) -> None:
    TRIED["framer"] += 1
    limits = SMALL if small else FramingLimits()
    bound = limits.max_line + limits.max_literal + limits.max_command + len(data) + 2

    def run() -> None:
        framer = CommandFramer(limits)
        framer.authenticated = authenticated
        points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
        refuse = iter(refusals)
        for start, end in itertools.pairwise(points):
            framer.feed(data[start:end])
            for _ in range(len(data) + 2):  # each event consumes input or ends a command
                event = framer.next_event()
                if event is None:
                    break
                if isinstance(event, CommandFrame):
                    _check_frame(event.raw)
                elif isinstance(event, FramingError):
                    response.render_parse_error(event.error)
                elif isinstance(event, ContinuationNeeded) and next(refuse, False):
                    framer.refuse_literal()
                assert framer.buffered <= bound
            else:
                raise AssertionError("the framer did not stop producing events")

    _bounded(run)


PREFIXES = [
    b"", b"a ", b"a FETCH 1 ", b"a SEARCH ", b"a UID STORE 1:* ", b"a LIST ",
    b"a APPEND INBOX ", b"a STATUS INBOX ", b"a LOGIN ", b"a AUTHENTICATE PLAIN ",
]  # fmt: skip


@fuzz("parser")
@given(prefix=st.sampled_from(PREFIXES), rest=st.one_of(imapish, st.binary(max_size=300)))
def test_parser(prefix: bytes, rest: bytes) -> None:
    TRIED["parser"] += 1
    _bounded(lambda: _check_frame(prefix + rest))


# ------------------------------------------------------------------------ MIME

_word = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)
_address = st.one_of(
    st.builds(lambda a, b: f"{a}@{b}", _word, _word),
    st.builds(lambda n, a: f'"{n}" <{a}@x.test>', _word, _word),
    st.builds(lambda g, a: f"{g}: {a}@x;", _word, _word),
    st.sampled_from(["<", ">", "(", ")", ",", ";", ":", '"', "@", "\\"]),
)
_header = st.one_of(
    st.builds(lambda n, v: f"{n}: {v}", st.sampled_from(["From", "To", "Cc", "Sender"]),
              st.lists(_address, max_size=6).map(", ".join)),
    st.builds(lambda v: f"Subject: {v}", _word),
    st.builds(lambda v: f"Content-Type: {v}", st.sampled_from([
        "multipart/mixed; boundary=b", "multipart/digest; boundary=b", "message/rfc822",
        "text/plain; charset=utf-8", "multipart/mixed", "text", ";;;", "application/x"])),
    st.builds(lambda v: f"Content-Transfer-Encoding: {v}", _word),
    st.just(" folded continuation"),
    _word,
)  # fmt: skip


@st.composite
def messages(draw: st.DrawFn, depth: int = 0) -> bytes:
    head = draw(st.lists(_header, max_size=6))
    out = "\r\n".join(head).encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    if depth < 4 and draw(st.booleans()):
        children = draw(st.lists(messages(depth + 1), max_size=4))
        out += b"".join(b"--b\r\n" + child + b"\r\n" for child in children)
        if draw(st.booleans()):
            out += b"--b--\r\n"
    else:
        out += draw(st.binary(max_size=60))
    return out


def _check_structure(raw: bytes, limits: mime.MimeLimits) -> None:
    s = mime.analyze(raw, limits)
    for start, body, end in [*s.parts.values(), *s.messages.values()]:
        assert 0 <= start <= body <= end <= len(raw)
    text = s.to_json()
    assert len(text) <= limits.structure_budget(len(raw))
    assert mime.MessageStructure.from_json(text) == s
    assert len(s.parts) <= limits.max_parts + 1


@fuzz("mime")
@given(
    raw=st.one_of(messages(), st.binary(max_size=2000)),
    tight=st.booleans(),
)
def test_mime_analyser(raw: bytes, tight: bool) -> None:
    TRIED["mime"] += 1
    limits = (
        mime.MimeLimits(max_parts=3, max_depth=2, max_addresses=2, max_header_lines=4,
                        structure_floor=300, max_structure_bytes=600)
        if tight
        else mime.LIMITS
    )  # fmt: skip
    _bounded(lambda: _check_structure(raw, limits))
