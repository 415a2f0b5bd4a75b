"""LIST/LSUB mailbox patterns (RFC 3501 §6.3.8): ``*`` matches any characters, ``%`` any
but the hierarchy delimiter, everything else itself.

A pattern is matched as a small automaton run over the name once, with the set of
pattern positions reached kept as the bits of an integer (shift-and), so the time is
linear in the name and in the pattern, whatever they hold. A regular expression with
``.*`` per wildcard backtracks instead: twenty ``*a`` against a long name do not finish.
Patterns are capped at :data:`MAX_PATTERN` characters (reference and pattern together).
Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from clustermail.mail.store import names

#: The longest reference + pattern LIST and LSUB accept (a mailbox name is at most
#: 1000 characters; a pattern longer than this cannot be a sensible one).
MAX_PATTERN = 1024


class PatternTooLong(ValueError):
    """A reference + pattern over :data:`MAX_PATTERN` characters."""


@dataclass(frozen=True, slots=True)
class MailboxPattern:
    """A compiled pattern; :meth:`matches` tells whether a whole name matches it."""

    text: str
    delimiter: str
    _literal: dict[str, int]  # character → positions holding that character
    _star: int  # positions holding "*"
    _percent: int  # positions holding "%"
    _accept: int  # the position after the last token
    _pieces: tuple[str, ...] = ()  # the literal runs between wildcards

    def matches(self, name: str) -> bool:
        # Cheap rejection first (substring tests run in C): every literal run of the
        # pattern must occur in the name. Most names fail here when a pattern does not
        # match them, before a step per character.
        for piece in self._pieces:
            if piece not in name:
                return False
        star, percent, literal = self._star, self._percent, self._literal
        wild = star | percent
        state = 1 | ((1 & wild) << 1)  # position 0, and past a leading wildcard
        for ch in name:
            # A wildcard position stays put on any character ("%" not on the delimiter);
            # a literal position moves on when the character is its own.
            stay = state & star if ch == self.delimiter else state & wild
            state = stay | ((state & literal.get(ch, 0)) << 1)
            state |= (state & wild) << 1  # a wildcard may match nothing (no two in a row)
            if not state:
                return False
        return bool(state & self._accept)


def compile_pattern(
    reference: str, pattern: str, delimiter: str = names.DELIMITER
) -> MailboxPattern:
    """The pattern ``reference + pattern``; INBOX at its start matches in any case (the
    names it is matched against are canonical, with INBOX in capitals)."""
    full = reference + pattern
    if len(full) > MAX_PATTERN:
        raise PatternTooLong(f"mailbox pattern longer than {MAX_PATTERN} characters")
    if full[:5].upper() == names.INBOX and full[5:6] in ("", delimiter, "*", "%"):
        full = names.INBOX + full[5:]
    tokens: list[str] = []
    for ch in full:
        # Runs of wildcards collapse: any "*" makes the run "*", else it is one "%".
        if ch in "*%" and tokens and tokens[-1] in "*%":
            if ch == "*":
                tokens[-1] = "*"
            continue
        tokens.append(ch)
    literal: dict[str, int] = {}
    star = percent = 0
    for i, tok in enumerate(tokens):
        if tok == "*":
            star |= 1 << i
        elif tok == "%":
            percent |= 1 << i
        else:
            literal[tok] = literal.get(tok, 0) | 1 << i
    pieces = "".join(t if t not in "*%" else "\0" for t in tokens).split("\0")
    return MailboxPattern(
        full, delimiter, literal, star, percent, 1 << len(tokens), tuple(p for p in pieces if p)
    )
