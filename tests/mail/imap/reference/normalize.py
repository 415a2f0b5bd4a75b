"""Normalising transcripts so that only differences that matter remain.

Each rule removes a detail that the RFCs leave to the server (documented in
docs/imap-reference.md):

1. strings are compared by value: a quoted string and a literal with the same
   bytes are the same (servers choose freely);
2. the human-readable text after a status response (and its response code)
   is dropped; the code is kept;
3. capability lists are dropped (``CAPABILITY`` data and codes): each server
   announces its own extensions;
4. UIDVALIDITY values (also inside APPENDUID/COPYUID) and mod-sequence values
   are server-chosen numbers;
5. the order of flags in a flag list, of attributes in a LIST response, and of
   consecutive LIST/LSUB responses has no meaning;
6. BODYSTRUCTURE/BODY strings are compared case-insensitively: types,
   subtypes, parameter names, encodings and dispositions are case-insensitive
   and Dovecot lower-cases the defaults it fills in;
7. ID data and the text of ``+`` continuation requests are server-specific;
8. the order of the items inside one FETCH response has no meaning (RFC 3501
   §7.4.2 lists data items, not an order; Dovecot puts a FLAGS it adds first).
"""

from __future__ import annotations

import re


def _canonical(data: str) -> str:
    out = ['"']
    for ch in data:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\n":
            out.append("\\n")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch) & 0xFFFF:02x}")
    out.append('"')
    return "".join(out)


_LITERAL = re.compile(r"~?\{(\d+)\+?\}\r\n")


def canonical_strings(line: str) -> str:
    """Every quoted string and literal in canonical quoted form."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == '"':
            j, buf = i + 1, []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(line[j])
                j += 1
            out.append(_canonical("".join(buf)))
            i = j + 1
            continue
        if ch in "{~":
            m = _LITERAL.match(line, i)
            if m is not None:
                # sizes count bytes; the transcript holds surrogate-escaped text
                size = int(m.group(1))
                start = m.end()
                data = line[start:]
                taken = _take_bytes(data, size)
                out.append(_canonical(taken))
                i = start + len(taken)
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _take_bytes(text: str, size: int) -> str:
    count = 0
    for k, ch in enumerate(text):
        if count >= size:
            return text[:k]
        count += len(ch.encode("utf-8", "surrogateescape"))
    return text


def _balanced_end(s: str, i: int) -> int:
    """Index after the parenthesised group that starts at ``s[i] == "("``."""
    depth = 0
    j = i
    while j < len(s):
        ch = s[j]
        if ch == '"':
            j += 1
            while j < len(s) and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(s)


def _upper_strings(group: str) -> str:
    return re.sub(r'"((?:[^"\\]|\\.)*)"', lambda m: '"' + m.group(1).upper() + '"', group)


def _fold_structures(line: str) -> str:
    for key in ("BODYSTRUCTURE (", "BODY ("):
        start = 0
        while True:
            k = line.find(key, start)
            if k < 0:
                break
            p = k + len(key) - 1
            end = _balanced_end(line, p)
            line = line[:p] + _upper_strings(line[p:end]) + line[end:]
            start = end
    return line


def _sort_list(m: re.Match[str]) -> str:
    items = m.group(2).split()
    return f"{m.group(1)}({' '.join(sorted(items))})"


_STATUS_RESP = re.compile(r"^(\d> (?:\*|[\w.-]+)) (OK|NO|BAD|BYE|PREAUTH)(?: (\[[^\]]*\]))?.*$")


def normalize_line(line: str) -> str:
    if line[1:3] == "< ":
        return line  # a command as sent
    line = canonical_strings(line)
    if line[3:4] == "+":
        return line[:4]
    line = _fold_structures(line)
    m = _STATUS_RESP.match(line)
    if m is not None:
        line = f"{m.group(1)} {m.group(2)}" + (f" {m.group(3)}" if m.group(3) else "")
    line = re.sub(r"\[CAPABILITY [^\]]*\]", "[CAPABILITY]", line)
    line = re.sub(r"^(\d> \* CAPABILITY) .*$", r"\1", line)
    line = re.sub(r"^(\d> \* ID) .*$", r"\1", line)
    line = re.sub(r"\b(UIDVALIDITY|APPENDUID|COPYUID) \d+", r"\1 *", line)
    line = re.sub(r"\bHIGHESTMODSEQ \d+", "HIGHESTMODSEQ *", line)
    line = re.sub(r"\bMODSEQ \(\d+\)", "MODSEQ (*)", line)
    line = re.sub(r"((?:PERMANENT)?FLAGS )\(([^()]*)\)", _sort_list, line)
    line = re.sub(r"^(\d> \* (?:LIST|LSUB) )\(([^()]*)\)", _sort_list, line)
    return _sort_fetch(line)


_FETCH = re.compile(r"^(\d> \* \d+ FETCH )\((.*)\)$", re.S)


def _skip_string(s: str, i: int) -> int:
    j = i + 1
    while j < len(s) and s[j] != '"':
        j += 2 if s[j] == "\\" else 1
    return j + 1


def _fetch_items(body: str) -> list[str] | None:
    """``NAME value`` pairs of a FETCH response body, or None when it does not parse."""
    items: list[str] = []
    i, n = 0, len(body)
    while i < n:
        start, depth = i, 0
        while i < n and not (body[i] == " " and depth == 0):
            if body[i] == "[":
                depth += 1
            elif body[i] == "]":
                depth -= 1
            i += 1
        i += 1  # the space after the name
        if i > n:
            return None
        if body[i] == "(":
            i = _balanced_end(body, i)
        elif body[i] == '"':
            i = _skip_string(body, i)
        else:
            while i < n and body[i] != " ":
                i += 1
        items.append(body[start:i])
        i += 1  # the space between items
    return items


def _sort_fetch(line: str) -> str:
    m = _FETCH.match(line)
    if m is None:
        return line
    items = _fetch_items(m.group(2))
    if items is None:
        return line
    return f"{m.group(1)}({' '.join(sorted(items))})"


def normalize(transcript: list[str]) -> list[str]:
    lines = [normalize_line(x) for x in transcript]
    # consecutive LIST/LSUB responses: order is not significant
    out: list[str] = []
    block: list[str] = []
    for line in lines:
        if re.match(r"\d> \* (LIST|LSUB) ", line):
            block.append(line)
            continue
        out += sorted(block)
        block = []
        out.append(line)
    return out + sorted(block)
