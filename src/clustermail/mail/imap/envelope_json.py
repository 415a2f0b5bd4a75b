"""ENVELOPE in wire form straight from the structure JSON stored at delivery.

A client's first ``FETCH 1:* (FLAGS ENVELOPE)`` renders every message's ENVELOPE once.
Parsing each whole stored structure (:meth:`MessageStructure.from_json`: the
BODYSTRUCTURE and part offsets too) and rendering the nested lists in Python cost
some 40 µs a message; this module does the same job in a few µs by working on the
JSON text itself:

* :meth:`MessageStructure.to_json` writes ``{"v":1,"envelope":[...],"body":...``, so the
  envelope is the text between that prefix and the first ``,"body":`` (a ``"`` inside a
  JSON string is always escaped, so that key cannot occur inside the envelope's strings);
* when the envelope's text is printable ASCII without a backslash, each of its strings is
  printable ASCII without ``"`` or ``\\``: IMAP quotes it exactly as JSON does, and only
  the structure between the strings (brackets, commas, ``null``) differs. That structure,
  the *skeleton*, repeats from message to message; it is translated once (by rendering
  an envelope of empty strings with :func:`response.render_envelope`, which also checks
  its shape) and the strings are put back between the translated pieces.

Anything else (escapes, 8-bit headers stored as ``\\u`` escapes, long strings that go as
literals, another layout) gives None, and the caller renders the parsed envelope as
before: the bytes sent never depend on which way was taken.
"""

from __future__ import annotations

import json

from clustermail.mail.imap import response as r

#: What :meth:`MessageStructure.to_json` writes before and after the envelope.
PREFIX = '{"v":1,"envelope":'
SUFFIX = ',"body":'

#: Translated skeletons: the pieces of IMAP text between the strings (None: not an
#: envelope's). A mailbox has a few dozen (they differ by the number of addresses in each
#: field); the map is emptied when full, so made-up ones cost time, not memory (a few
#: MB at most). Long skeletons (many addresses) are translated each time, not kept.
_TEMPLATES: dict[tuple[str, ...], list[str] | None] = {}
MAX_TEMPLATES = 512
MAX_SKELETON = 64  # pieces
MAX_SKELETON_CHARS = 1024
_SKELETON_CHARS = "[],nul "


def envelope_text(structure: str) -> str | None:
    """The envelope's JSON inside a stored structure; None for another layout."""
    if not structure.startswith(PREFIX):
        return None
    end = structure.find(SUFFIX, len(PREFIX))
    return structure[len(PREFIX) : end] if end > 0 else None


def render(text: str) -> bytes | None:
    """What ``response.render_envelope(json.loads(text))`` gives, or None when this fast
    way does not apply (the caller then renders the parsed envelope)."""
    if "\\" in text or not text.isascii() or not text.isprintable():
        return None  # escapes, control characters or DEL: not quoted as they stand
    parts = text.split('"')
    if len(parts) % 2 == 0:
        return None  # an odd number of quotes
    if len(text) > r.MAX_QUOTED and any(len(s) > r.MAX_QUOTED for s in parts[1::2]):
        return None  # a literal, not a quoted string
    skeleton = tuple(parts[0::2])
    template = _TEMPLATES.get(skeleton)
    if template is None:
        if skeleton in _TEMPLATES:
            return None  # known not to be an envelope
        template = _translate(skeleton)
        if len(skeleton) <= MAX_SKELETON and sum(map(len, skeleton)) <= MAX_SKELETON_CHARS:
            if len(_TEMPLATES) >= MAX_TEMPLATES:
                _TEMPLATES.clear()
            _TEMPLATES[skeleton] = template
        if template is None:
            return None
    parts[0::2] = template
    return '"'.join(parts).encode("ascii")


def _translate(skeleton: tuple[str, ...]) -> list[str] | None:
    """The IMAP pieces between the strings of envelopes with this skeleton; None unless it
    is an envelope's (ten fields, address lists of four-field addresses...)."""
    if any(piece.strip(_SKELETON_CHARS) for piece in skeleton):
        return None  # numbers, objects, true...
    try:
        value = json.loads('""'.join(skeleton))
        if not isinstance(value, list):
            return None
        rendered = r.render_envelope(value).decode("ascii")
    except (ValueError, RecursionError, r.RenderError):  # RenderError is a ValueError too
        return None
    pieces = rendered.split('"')
    if len(pieces) != 2 * len(skeleton) - 1 or any(pieces[1::2]):
        return None
    return pieces[0::2]
