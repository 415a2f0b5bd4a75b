"""Comparing two normalised transcripts, with the suite's allow-list of known differences.

``allowlist.toml`` lists differences that are not bugs, each with its reason::

    [[allow]]
    scripts = "fetch-*"          # fnmatch pattern of script names
    dovecot = 'regex'            # full match on Dovecot's normalised line ("<absent>": none)
    ours = 'regex'               # full match on ours
    reason = "why this is fine"

A differing pair of lines is allowed when one entry matches both lines.

``[[mask]]`` entries (``scripts``, ``pattern``, ``replace``, ``reason``) rewrite
both transcripts before they are compared, for a difference that can appear
inside any line (a number in a BODYSTRUCTURE, say).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ALLOWLIST = Path(__file__).parent / "allowlist.toml"
ABSENT = "<absent>"


@dataclass(frozen=True)
class Allowance:
    scripts: str
    dovecot: re.Pattern[str]
    ours: re.Pattern[str]
    reason: str


@dataclass(frozen=True)
class Mask:
    scripts: str
    pattern: re.Pattern[str]
    replace: str
    reason: str


def load_masks(path: Path = ALLOWLIST) -> list[Mask]:
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    out = []
    for entry in data.get("mask", []):
        if not entry.get("reason"):
            raise ValueError(f"{path}: every mask needs a reason: {entry!r}")
        out.append(
            Mask(
                entry.get("scripts", "*"),
                re.compile(entry["pattern"]),
                entry["replace"],
                entry["reason"],
            )
        )
    return out


def apply_masks(script: str, lines: list[str], masks: list[Mask]) -> list[str]:
    for m in masks:
        if fnmatch.fnmatchcase(script, m.scripts):
            lines = [m.pattern.sub(m.replace, line) for line in lines]
    return lines


def load_allowlist(path: Path = ALLOWLIST) -> list[Allowance]:
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for entry in data.get("allow", []):
        if not entry.get("reason"):
            raise ValueError(f"{path}: every allow-list entry needs a reason: {entry!r}")
        out.append(
            Allowance(
                entry.get("scripts", "*"),
                re.compile(entry["dovecot"], re.S),
                re.compile(entry["ours"], re.S),
                entry["reason"],
            )
        )
    return out


def _allowed(script: str, theirs: str, ours: str, allow: list[Allowance]) -> bool:
    for a in allow:
        if (
            fnmatch.fnmatchcase(script, a.scripts)
            and a.dovecot.fullmatch(theirs)
            and (a.ours.fullmatch(ours))
        ):
            return True
    return False


def differences(
    script: str, theirs: list[str], ours: list[str], allow: list[Allowance]
) -> list[str]:
    """Human-readable lines for each difference the allow-list does not cover."""
    problems: list[str] = []
    matcher = difflib.SequenceMatcher(a=theirs, b=ours, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            continue
        left, right = theirs[a1:a2], ours[b1:b2]
        for k in range(max(len(left), len(right))):
            t = left[k] if k < len(left) else ABSENT
            o = right[k] if k < len(right) else ABSENT
            if not _allowed(script, t, o, allow):
                problems.append(f"dovecot: {t}\n   ours: {o}")
    return problems
